from __future__ import annotations

from pathlib import Path

import pytest

from migrate.host import launch as launch_mod
from migrate.host.launch import (
    DaemonLaunch,
    detect_launch,
    expand_systemd_vars,
    find_dockerd_pid,
    from_proc,
    listens_on,
    merge_launches,
    parse_dockerd_argv,
    parse_environment,
    parse_exec_start,
    parse_systemctl_show,
    socket_path,
)

pytestmark = pytest.mark.unit

DOCKERD = "/usr/bin/dockerd"

# Captured from `systemctl show docker -p ExecStart ...` on Debian 12 with docker-ce.
SYSTEMCTL_SHOW = """\
LoadState=loaded
ExecStart={ path=/usr/bin/dockerd ; argv[]=/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock ; ignore_errors=no ; start_time=[Mon 2024-06-03 10:00:01 UTC] ; stop_time=[n/a] ; pid=812 ; code=(null) ; status=0/0 }
Environment=
MainPID=812
FragmentPath=/lib/systemd/system/docker.service
DropInPaths=/etc/systemd/system/docker.service.d/override.conf /etc/systemd/system/docker.service.d/proxy.conf
"""  # noqa: E501


@pytest.mark.parametrize(
    "flags",
    [
        ["--storage-driver", "overlay2"],
        ["--storage-driver=overlay2"],
        ["-s", "overlay2"],
        ["-soverlay2"],
        ["-s=overlay2"],
        ["-Ds", "overlay2"],
        ["-D", "-s", "overlay2"],
        ["-G", "docker", "-l", "debug", "-b", "none", "-s", "overlay2"],
        ["-Gdocker", "-soverlay2"],
        ["-s", "vfs", "--storage-driver", "overlay2"],  # pflag: the last one wins
    ],
)
def test_storage_driver_spellings(flags: list[str]) -> None:
    launch = parse_dockerd_argv([DOCKERD, "-H", "fd://", *flags])
    assert launch.storage_driver_flag == "overlay2"


@pytest.mark.parametrize(
    "argv",
    [
        [DOCKERD],
        [DOCKERD, "-H", "fd://", "--containerd=/run/containerd/containerd.sock"],
        [DOCKERD, "--storage-opt", "overlay2.size=10G"],
        [DOCKERD, "--", "-s", "overlay2"],
        [DOCKERD, "-H", "-s"],  # -s is the value of -H here
        [DOCKERD, "-l", "-s"],  # ... and of -l here
    ],
)
def test_no_storage_driver_flag(argv: list[str]) -> None:
    assert parse_dockerd_argv(argv).storage_driver_flag is None


def test_value_flags() -> None:
    launch = parse_dockerd_argv([
        DOCKERD, "--config-file", "/etc/d.json", "--data-root=/srv/docker", "-H", "fd://",
        "--host=unix:///run/other.sock", "--containerd", "/run/c.sock",
        "--containerd-namespace=mine", "--exec-root", "/run/x", "-p", "/run/d.pid",
        "--userns-remap=default",
    ])
    assert launch.config_file == "/etc/d.json"
    assert launch.data_root == "/srv/docker"
    assert launch.hosts == ("fd://", "unix:///run/other.sock")
    assert launch.containerd_flag == "/run/c.sock"
    assert launch.containerd_namespace == "mine"
    assert launch.exec_root == "/run/x"
    assert launch.pidfile == "/run/d.pid"
    assert launch.userns_remap_flag == "default"
    assert launch.storage_driver_flag is None
    assert launch.feature_flags == ()


def test_feature_flags_collected() -> None:
    launch = parse_dockerd_argv(
        [DOCKERD, "--feature", "containerd-snapshotter=true", "--feature=cdi=false"]
    )
    assert launch.feature_flags == ("containerd-snapshotter=true", "cdi=false")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [([], None), (["--live-restore"], True), (["--live-restore=false"], False),
     (["--live-restore=1"], True), (["--live-restore=maybe"], None)],
)
def test_live_restore(flags: list[str], expected: bool | None) -> None:
    assert parse_dockerd_argv([DOCKERD, *flags]).live_restore is expected


def test_argv_without_program_name() -> None:
    assert parse_dockerd_argv(["-s", "vfs"]).storage_driver_flag == "vfs"


def test_docker_driver_env() -> None:
    assert parse_dockerd_argv([DOCKERD], {"DOCKER_DRIVER": "overlay2"}).docker_driver_env == (
        "overlay2")
    assert parse_dockerd_argv([DOCKERD], {"DOCKER_DRIVER": ""}).docker_driver_env is None
    assert parse_dockerd_argv([DOCKERD], {}).docker_driver_env is None


# --- systemd ----------------------------------------------------------------------------


def test_parse_exec_start_sample() -> None:
    value = SYSTEMCTL_SHOW.splitlines()[1].partition("=")[2]
    assert parse_exec_start(value) == (
        DOCKERD, "-H", "fd://", "--containerd=/run/containerd/containerd.sock")


def test_parse_exec_start_picks_dockerd_entry() -> None:
    value = ("{ path=/bin/true ; argv[]=/bin/true ; ignore_errors=no ; start_time=[n/a] } "
             "{ path=/usr/bin/dockerd ; argv[]=/usr/bin/dockerd -s vfs ; ignore_errors=no ; "
             "start_time=[n/a] }")
    assert parse_exec_start(value) == (DOCKERD, "-s", "vfs")
    assert parse_exec_start("") == ()


def test_parse_systemctl_show() -> None:
    launch = parse_systemctl_show(SYSTEMCTL_SHOW)
    assert launch is not None
    assert launch.source == "systemd"
    assert launch.pid == 812
    assert launch.hosts == ("fd://",)
    assert launch.containerd_flag == "/run/containerd/containerd.sock"
    assert launch.storage_driver_flag is None
    assert launch.unit_files == (
        "/lib/systemd/system/docker.service",
        "/etc/systemd/system/docker.service.d/override.conf",
        "/etc/systemd/system/docker.service.d/proxy.conf",
    )


def test_systemd_environment_and_variable_expansion() -> None:
    text = SYSTEMCTL_SHOW.replace(
        "argv[]=/usr/bin/dockerd -H fd://", "argv[]=/usr/bin/dockerd $DOCKER_OPTS $MISSING -H fd://"
    ).replace("Environment=", 'Environment="DOCKER_OPTS=-s overlay2 --live-restore" '
              "DOCKER_DRIVER=vfs")
    launch = parse_systemctl_show(text)
    assert launch is not None
    assert launch.storage_driver_flag == "overlay2"
    assert launch.live_restore is True
    assert launch.docker_driver_env == "vfs"
    assert launch.unresolved_vars == ("MISSING",)


def test_unit_not_loaded() -> None:
    assert parse_systemctl_show("LoadState=not-found\nExecStart=\nMainPID=0\n") is None
    assert parse_systemctl_show("LoadState=loaded\nExecStart=\n") is None


def test_parse_environment_quoting() -> None:
    assert parse_environment('A=1 "B=two words" C=') == {"A": "1", "B": "two words", "C": ""}


def test_expand_braced_stays_one_word() -> None:
    argv, missing = expand_systemd_vars(["--data-root=${ROOT}", "$OPTS"], {"ROOT": "/a b",
                                                                            "OPTS": "-D  -s vfs"})
    assert argv == ("--data-root=/a b", "-D", "-s", "vfs")
    assert missing == ()


def test_merge_keeps_flags_seen_only_in_proc() -> None:
    unit = parse_dockerd_argv([DOCKERD, "-H", "fd://"], {"A": "unit"}, source="systemd", pid=9)
    proc = parse_dockerd_argv([DOCKERD, "-H", "fd://", "-s", "overlay2", "--feature", "x=true"],
                              {"A": "proc", "DOCKER_DRIVER": "vfs"}, source="proc", pid=9)
    merged = merge_launches(unit, proc)
    assert merged.source == "systemd"
    assert merged.argv == unit.argv
    assert merged.storage_driver_flag == "overlay2"
    assert merged.feature_flags == ("x=true",)
    assert merged.hosts == ("fd://",)
    assert merged.environment == {"A": "unit", "DOCKER_DRIVER": "vfs"}
    assert merged.docker_driver_env == "vfs"


# --- /proc -------------------------------------------------------------------------------


def fake_proc(root: Path, pid: int, argv: list[str], env: dict[str, str] | None = None,
              comm: str = "dockerd") -> None:
    proc = root / str(pid)
    proc.mkdir(parents=True)
    (proc / "comm").write_text(comm + "\n")
    (proc / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    if env is not None:
        (proc / "environ").write_bytes(b"\0".join(f"{k}={v}".encode() for k, v in env.items()))


def test_from_proc(tmp_path: Path) -> None:
    fake_proc(tmp_path, 42, [DOCKERD, "-s", "overlay2"], {"DOCKER_DRIVER": "vfs", "X": "a=b"})
    launch = from_proc(42, str(tmp_path))
    assert launch is not None
    assert launch.source == "proc" and launch.pid == 42
    assert launch.storage_driver_flag == "overlay2"
    assert launch.environment == {"DOCKER_DRIVER": "vfs", "X": "a=b"}


def test_from_proc_tolerates_unreadable_environ(tmp_path: Path) -> None:
    fake_proc(tmp_path, 42, [DOCKERD], env=None)
    launch = from_proc(42, str(tmp_path))
    assert launch is not None and launch.environment == {}
    assert from_proc(43, str(tmp_path)) is None


@pytest.mark.parametrize(
    ("host", "expected"),
    [(None, "/var/run/docker.sock"), ("unix:///tmp/d.sock", "/tmp/d.sock"),
     ("tcp://1.2.3.4:2375", None), ("/tmp/x.sock", "/tmp/x.sock")],
)
def test_socket_path(host: str | None, expected: str | None) -> None:
    assert socket_path(host) == expected


def test_listens_on() -> None:
    default = parse_dockerd_argv([DOCKERD])
    activated = parse_dockerd_argv([DOCKERD, "-H", "fd://"])
    other = parse_dockerd_argv([DOCKERD, "--host=unix:///tmp/t/docker.sock"])
    assert listens_on(default, "/run/docker.sock")
    assert listens_on(activated, "/var/run/docker.sock")
    assert not listens_on(other, "/var/run/docker.sock")
    assert listens_on(other, "/tmp/t/docker.sock")


def test_find_dockerd_pid(tmp_path: Path) -> None:
    fake_proc(tmp_path, 100, [DOCKERD, "-H", "fd://"])
    fake_proc(tmp_path, 200, [DOCKERD, "--host", "unix:///tmp/t/docker.sock"])
    fake_proc(tmp_path, 300, ["/bin/sleep", "-H", "unix:///tmp/t/docker.sock"], comm="sleep")
    root = str(tmp_path)
    pidfile = str(tmp_path / "none.pid")
    assert find_dockerd_pid("unix:///tmp/t/docker.sock", proc_root=root, pidfile=pidfile) == 200
    assert find_dockerd_pid(None, proc_root=root, pidfile=pidfile) == 100
    assert find_dockerd_pid("unix:///tmp/elsewhere.sock", proc_root=root, pidfile=pidfile) is None
    assert find_dockerd_pid("tcp://127.0.0.1:2375", proc_root=root, pidfile=pidfile) is None


def test_find_dockerd_pid_falls_back_to_pidfile(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    fake_proc(proc, 7, [DOCKERD, "-H", "tcp://0.0.0.0:2375"])
    pidfile = tmp_path / "docker.pid"
    pidfile.write_text("7\n")
    assert find_dockerd_pid(None, proc_root=str(proc), pidfile=str(pidfile)) == 7
    pidfile.write_text("8\n")  # stale pidfile
    assert find_dockerd_pid(None, proc_root=str(proc), pidfile=str(pidfile)) is None


# --- detect_launch -----------------------------------------------------------------------


def _patch(monkeypatch: pytest.MonkeyPatch, unit: DaemonLaunch | None,
           procs: dict[int, DaemonLaunch]) -> None:
    monkeypatch.setattr(launch_mod, "systemd_booted", lambda: True)
    monkeypatch.setattr(launch_mod, "from_systemd", lambda unit_name="": unit)
    monkeypatch.setattr(launch_mod, "from_proc", lambda pid, proc_root="": procs.get(pid))
    monkeypatch.setattr(launch_mod, "find_dockerd_pid", lambda host=None: None)


def test_detect_prefers_systemd_for_its_own_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    unit = parse_dockerd_argv([DOCKERD, "-H", "fd://"], source="systemd", pid=812)
    proc = parse_dockerd_argv([DOCKERD, "-H", "fd://", "-s", "vfs"], source="proc", pid=812)
    _patch(monkeypatch, unit, {812: proc})
    launch = detect_launch(812)
    assert launch.source == "systemd"
    assert launch.storage_driver_flag == "vfs"


def test_detect_ignores_unit_of_another_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    unit = parse_dockerd_argv([DOCKERD, "-H", "fd://"], source="systemd", pid=812)
    proc = parse_dockerd_argv([DOCKERD, "--host=unix:///tmp/t.sock"], source="proc", pid=5)
    _patch(monkeypatch, unit, {5: proc})
    assert detect_launch(5).source == "proc"


def test_detect_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    _patch(monkeypatch, None, {})
    assert detect_launch(None) == DaemonLaunch(source="unknown")
    assert detect_launch(99).pid == 99


def test_the_units_last_start_is_read_from_its_monotonic_timestamps() -> None:
    measured = parse_systemctl_show(SYSTEMCTL_SHOW + "ExecMainStartTimestampMonotonic=5000000\n"
                                    "ActiveEnterTimestampMonotonic=6350000\n")
    assert measured is not None and measured.last_start_seconds == pytest.approx(1.35)
    unread = parse_systemctl_show(SYSTEMCTL_SHOW)
    assert unread is not None and unread.last_start_seconds is None
    for started, active in (("0", "6350000"), ("7000000", "6350000"), ("x", "1")):
        launch = parse_systemctl_show(SYSTEMCTL_SHOW + f"ExecMainStartTimestampMonotonic="
                                      f"{started}\nActiveEnterTimestampMonotonic={active}\n")
        assert launch is not None and launch.last_start_seconds is None, (started, active)
