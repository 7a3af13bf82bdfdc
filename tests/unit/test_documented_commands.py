"""Every command the tool tells an operator to type must exist, with the options it names.

Sources: string constants in migrate/ (messages and hints; f-string fields become a
placeholder), README.md, runbooks/ and ansible/README.md. A command is any
`containerd-migrate ...` span in backticks, or a `containerd-migrate` line of a shell block.
A backticked span that starts with a bare command word (`rollback --force`) is reported too:
the operator cannot type it as printed.
"""

from __future__ import annotations

import ast
import re
import shlex
import warnings
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from migrate.cli import main

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = "containerd-migrate"
PLACEHOLDER = "X"
DOCS = ("README.md", "runbooks", "ansible/README.md", "docs")
BACKTICKED = re.compile(r"`([^`\n]+)`")
# Words that end one command on a shell line.
SEPARATORS = {"|", "||", "&&", ";", ">", ">>", "2>", "2>&1", "<", "#"}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of docstring nodes: they are read in the source, never printed."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _strings(tree: ast.AST) -> Iterator[tuple[int, str]]:
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value
        elif isinstance(node, ast.JoinedStr):
            parts = [v.value if isinstance(v, ast.Constant) else PLACEHOLDER
                     for v in node.values]
            yield node.lineno, "".join(str(p) for p in parts)


def _python_texts() -> Iterator[tuple[str, str]]:
    for path in sorted((ROOT / "migrate").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for lineno, text in _strings(tree):
            yield f"{path.relative_to(ROOT)}:{lineno}", text


def _doc_files() -> Iterator[Path]:
    for name in DOCS:
        path = ROOT / name
        if path.is_file():
            yield path
        elif path.is_dir():
            yield from sorted(path.rglob("*.md"))


def _doc_texts() -> Iterator[tuple[str, str]]:
    for path in _doc_files():
        in_shell = False
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{lineno}"
            if line.lstrip().startswith("```"):
                in_shell = not in_shell and line.strip() in {"```sh", "```bash", "```console"}
                continue
            if in_shell:
                stripped = line.strip().removeprefix("$ ")
                if stripped.startswith(PROGRAM) or f" {PROGRAM} " in stripped:
                    yield where, f"`{stripped}`"
            else:
                yield where, line


def _commands(text: str) -> Iterator[list[str]]:
    """Each `containerd-migrate ...` command in a text, as argv after the program name."""
    for span in BACKTICKED.findall(text):
        try:
            words = shlex.split(span, comments=False)
        except ValueError:
            words = span.split()
        for index, word in enumerate(words):
            if Path(word).name == PROGRAM:
                argv: list[str] = []
                for rest in words[index + 1:]:
                    if rest in SEPARATORS or rest.startswith("#"):
                        break
                    argv.append(rest)
                yield argv


def _bare_command_spans(text: str, command_names: set[str]) -> Iterator[str]:
    for span in BACKTICKED.findall(text):
        words = span.split()
        # `run` alone is a name in prose; with options it is something to type.
        if len(words) > 1 and words[0] in command_names and words[1].startswith("-"):
            yield span


def command_problem(argv: list[str]) -> str | None:
    """None when click accepts the command line; else why not."""
    argv = [a for a in argv if a not in {"...", "…"}]
    if not argv or argv[0] == PLACEHOLDER:
        return None  # the program named in prose, or a command built at run time
    try:
        ctx = main.make_context(PROGRAM, list(argv), resilient_parsing=False)
    except click.exceptions.Exit:
        return None  # --help / --version
    except click.UsageError as error:
        return error.format_message()
    with warnings.catch_warnings():
        # Click 8.2 deprecates protected_args, where 8.1 keeps the command name.
        warnings.simplefilter("ignore", DeprecationWarning)
        rest = [*ctx.protected_args, *ctx.args]
    if not rest:
        return None
    name, *options = rest
    command = main.get_command(ctx, name)
    if command is None:
        return f"no such command {name!r}"
    try:
        command.make_context(name, options, parent=ctx, resilient_parsing=False)
    except click.exceptions.Exit:
        return None
    except click.UsageError as error:
        return error.format_message()
    return None


def _all_texts() -> list[tuple[str, str]]:
    return [*_python_texts(), *_doc_texts()]


def test_the_sources_mention_commands_at_all() -> None:
    found = [argv for _, text in _all_texts() for argv in _commands(text)]
    # The README alone documents every command; an empty scan means the scanner broke.
    assert len(found) > 20
    assert {argv[0] for argv in found if argv and not argv[0].startswith("-")} >= {
        "plan", "run", "export", "status", "verify", "rollback", "cleanup"}


def test_every_printed_command_exists_with_its_options() -> None:
    bad = []
    for where, text in _all_texts():
        for argv in _commands(text):
            problem = command_problem(argv)
            if problem:
                bad.append(f"{where}: `{PROGRAM} {' '.join(argv)}`: "
                           f"{problem.splitlines()[0]}")
    assert not bad, "\n".join(bad)


def test_no_hint_names_a_command_without_the_program() -> None:
    names = set(main.list_commands(click.Context(main)))
    bad = [f"{where}: `{span}`" for where, text in _python_texts()
           for span in _bare_command_spans(text, names)]
    assert not bad, "\n".join(bad)


def test_the_checker_rejects_what_does_not_exist() -> None:
    assert command_problem(["migrate"]) is not None
    assert command_problem(["rollback", "--no-such-option"]) is not None
    assert command_problem(["run", "--containers", "maybe"]) is not None
    assert command_problem(["rollback", "--yes", "--force"]) is None
    assert list(_bare_command_spans("run `rollback --force` now", {"rollback"})) == [
        "rollback --force"]
