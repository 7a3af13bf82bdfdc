"""Waiting for the daemon after a restart: in the store asked for, or a RestartFailed
that says why (no answer, or the wrong store) without waiting out the whole deadline."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from migrate.engine import daemon_wait
from migrate.engine.daemon_wait import wait_for_daemon
from migrate.errors import EngineUnreachable, RestartFailed
from migrate.models import EngineInfo, Store

pytestmark = pytest.mark.unit


# --- wait_for_daemon -------------------------------------------------------------------


def test_wait_for_daemon_gives_up_quickly_on_a_dead_socket(tmp_path: Path) -> None:
    host = f"unix://{tmp_path}/missing.sock"
    started = time.monotonic()
    with pytest.raises(RestartFailed) as caught:
        wait_for_daemon(host, Store.CONTAINERD, timeout=0.6, poll=0.05)
    elapsed = time.monotonic() - started
    assert elapsed < 3.0
    assert "did not answer" in caught.value.message
    assert "journalctl -u docker" in caught.value.hint


def _info(store: Store) -> EngineInfo:
    return EngineInfo(version="28.5.2", api_version="1.51", store=store, driver="overlay2",
                      data_root="/var/lib/docker")


def test_wait_for_daemon_reports_the_wrong_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon_wait, "probe", lambda host, timeout: _info(Store.LEGACY))
    with pytest.raises(RestartFailed) as caught:
        wait_for_daemon("unix:///x.sock", Store.CONTAINERD, timeout=0.3, poll=0.05)
    assert "legacy image store" in caught.value.message
    assert "--feature" in caught.value.hint
    assert "typo" in caught.value.hint


def test_wait_for_daemon_returns_once_the_store_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([None, _info(Store.LEGACY), _info(Store.CONTAINERD)])

    def probe(host: str, timeout: float) -> EngineInfo:
        answer = next(answers)
        if answer is None:
            raise EngineUnreachable("down")
        return answer

    monkeypatch.setattr(daemon_wait, "probe", probe)
    info = wait_for_daemon("unix:///x.sock", Store.CONTAINERD, timeout=10, poll=0.01)
    assert info.store is Store.CONTAINERD


def test_wait_for_daemon_fails_early_when_the_wrong_store_persists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(daemon_wait, "probe", lambda host, timeout: _info(Store.CONTAINERD))
    started = time.monotonic()
    with pytest.raises(RestartFailed, match="containerd image store, not the legacy store"):
        wait_for_daemon("unix:///x.sock", Store.LEGACY, timeout=60, poll=0.02,
                        wrong_store_grace=0.2)
    assert time.monotonic() - started < 2.0
