"""Reports hold no secrets and nobody else can read them: containers' and images' Env values
are masked unless `plan --show-env`, and every report is written 0600 (issue 23 item 20)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from migrate.cli import main
from migrate.journal.state_dir import StateDir
from migrate.phases.recreate import write_container_map
from migrate.phases.verify import ImageCheck, VerificationReport, write_reports
from tests.unit.fake_api import CONTAINER_ID, IMAGE_ID, FakeApi, fake_api, populated_daemon

pytestmark = pytest.mark.unit

SECRETS = ("hunter2", "s3cr3t-token")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[FakeApi]:
    routes = populated_daemon(tmp_path / "data-root")
    routes[f"/containers/{CONTAINER_ID}/json"]["Config"]["Env"] = [
        "PATH=/bin", "DB_PASSWORD=hunter2", "EMPTY=", "INHERITED"]
    routes[f"/images/{IMAGE_ID}/json"]["Config"]["Env"] = ["PATH=/bin", "TOKEN=s3cr3t-token"]
    with fake_api(tmp_path, routes) as api:
        yield api


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _cli(daemon: FakeApi, tmp_path: Path, *args: str, codes: tuple[int, ...] = (0, 3)) -> str:
    result = CliRunner().invoke(main, [
        "-q", "--host", daemon.host, "--daemon-config", str(tmp_path / "daemon.json"),
        "--state-dir", str(tmp_path / "state"), *args], catch_exceptions=False)
    assert result.exit_code in codes, result.output
    return result.output


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("fmt", ["json", "text", "markdown"])
def test_plan_masks_env_values_and_keeps_their_names(daemon: FakeApi, tmp_path: Path,
                                                     fmt: str) -> None:
    output = _cli(daemon, tmp_path, "plan", "--restart-command", "true", "--format", fmt)
    assert not any(secret in output for secret in SECRETS), output
    if fmt == "json":
        assert '"DB_PASSWORD=***"' in output and '"TOKEN=***"' in output
        assert '"EMPTY=***"' in output and '"INHERITED"' in output


def test_plan_show_env_shows_them(daemon: FakeApi, tmp_path: Path) -> None:
    output = _cli(daemon, tmp_path, "plan", "--restart-command", "true", "--format", "json",
                  "--show-env")
    assert all(secret in output for secret in SECRETS)


@pytest.mark.parametrize("existed", [False, True])
def test_plan_output_is_private(daemon: FakeApi, tmp_path: Path, umask_022: None,
                                existed: bool) -> None:
    target = tmp_path / "plan.json"
    if existed:
        target.write_text("old")
        target.chmod(0o644)
    _cli(daemon, tmp_path, "plan", "--restart-command", "true", "--format", "json",
         "--output", str(target))
    assert _mode(target) == 0o600
    text = target.read_text()
    assert "DB_PASSWORD=***" in text and not any(secret in text for secret in SECRETS)


def test_the_snapshots_plan_report_is_masked_and_private(daemon: FakeApi, tmp_path: Path,
                                                         umask_022: None) -> None:
    # The snapshot writes its plan report before the export (which the fake daemon fails).
    _cli(daemon, tmp_path, "export", "--containers", "leave", "--restart-command", "true",
         codes=(1,))
    report = tmp_path / "state" / "reports" / "plan.json"
    assert _mode(report) == 0o600
    assert "DB_PASSWORD=***" in report.read_text()
    assert not any(secret in report.read_text() for secret in SECRETS)


def test_verification_and_container_reports_are_private(tmp_path: Path,
                                                        umask_022: None) -> None:
    report = VerificationReport(checked_at=datetime.now(UTC), store="containerd", images=(
        ImageCheck(legacy_id=IMAGE_ID, new_id=IMAGE_ID, tags=("app:1",)),))
    state_dir = StateDir(tmp_path).ensure()
    written = [*write_reports(report, state_dir).values(),
               write_container_map(state_dir, {"web": {"id": CONTAINER_ID}})]
    assert len(written) == 4
    assert {path.name: _mode(path) for path in written} == {
        path.name: 0o600 for path in written}
