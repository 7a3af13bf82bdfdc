"""ansible-lint (default production profile) finds nothing in ansible/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BESIDE = Path(sys.executable).with_name("ansible-lint")
LINT = str(BESIDE) if BESIDE.is_file() else shutil.which("ansible-lint")

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(LINT is None, reason="ansible-lint not found: pip install ansible-lint "
                       "(the dev extra has it)"),
]  # fmt: skip


def test_the_playbooks_are_ansible_lint_clean() -> None:
    assert LINT is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8", NO_COLOR="1")
    done = subprocess.run([LINT, "--nocolor", "ansible/"], cwd=REPO, env=env, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=300,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
