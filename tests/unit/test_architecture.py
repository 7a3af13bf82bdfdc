"""Rules of the layout that import-linter's contracts do not state (those run in `make lint`)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import grimp
import pytest

from migrate.phases.runner import PHASES

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "migrate"
# The top level holds only the entry points and the values every layer shares.
TOP_LEVEL = {"__init__.py", "__main__.py", "cli.py", "errors.py", "models.py"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycle_between_modules() -> None:
    graph = grimp.build_graph("migrate")
    cycles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None:
                cycles.append(" -> ".join((importer, *back)))
    assert not cycles, "\n".join(cycles)


def test_no_module_imports_a_private_name_of_another() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("migrate"):
                private = [a.name for a in node.names if a.name.startswith("_")
                           and not a.name.startswith("__")]
                if private:
                    offenders.append(f"{_module_name(path)} imports {private} from "
                                     f"{node.module}")
    assert not offenders, "\n".join(offenders)


def test_the_top_level_holds_only_entry_points_and_shared_values() -> None:
    loose = {p.name for p in PACKAGE.glob("*.py")} - TOP_LEVEL
    assert not loose, f"put these in a subpackage named for their concept: {sorted(loose)}"


def test_no_module_re_exports_what_a_sibling_defines() -> None:
    """Only a package's __init__ may re-export; a module's __all__ names its own things."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        imported = {alias.asname or alias.name for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) for alias in node.names}
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
                names = {str(e.value) for e in getattr(node.value, "elts", [])
                         if isinstance(e, ast.Constant)}
                if names & imported:
                    offenders.append(f"{_module_name(path)} re-exports {sorted(names & imported)}")
    assert not offenders, "\n".join(offenders)


def test_the_engine_reads_no_proc_nor_systemd() -> None:
    """engine/ is the Docker API boundary: what /proc and systemd say about the host is
    host/'s to read (host/processes.py, host/systemd.py), handed to engine/ as values."""
    readers = {path.name for path in (PACKAGE / "engine").glob("*.py")
               if any(needle in line for line in path.read_text().splitlines()
                      if not line.lstrip().startswith("#")
                      for needle in ('"/proc', "'/proc", "/run/systemd", "systemd/system"))}
    assert readers == set()


def test_the_phase_independence_contract_lists_every_phase() -> None:
    """`make lint` refuses a phase that imports another only for the phases the contract
    names: a new phase in runner.PHASES must be named there too."""
    pyproject = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    contracts = pyproject["tool"]["importlinter"]["contracts"]
    independent = [c for c in contracts if c["type"] == "independence"
                   and c["name"] == "No phase imports another phase"]
    assert len(independent) == 1
    phases = {type(phase).__module__ for phase in PHASES.values()}
    assert set(independent[0]["modules"]) == phases
