"""Fetch Docker Engine binaries from Debian packages into a private, git-ignored cache.

No registry or Docker repository is reachable from the machines this runs on, but a Debian
mirror is. The mirror URI is read from the machine's own apt configuration so the repository
never hard-codes a mirror host.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "CONTAINERD_MIGRATE_ENGINE_CACHE"
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
LEGACY_SOURCES = Path("/etc/apt/sources.list")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
MARKER = ".complete.json"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class EngineSpec:
    key: str
    suite: str
    packages: tuple[str, ...]
    description: str


# docker-cli too: a fresh Debian 12 machine has no docker CLI, and these builds run on it;
# docker-compose for the compose tests, docker-buildx for the runbook's multi-platform build
# (an older cache without one of them is fetched again).
PACKAGES = ("docker.io", "containerd", "docker-cli", "docker-compose", "docker-buildx")
ENGINES: dict[str, EngineSpec] = {
    "26": EngineSpec("26", "trixie", PACKAGES, "Engine 26.1 + containerd 1.7"),
    "28": EngineSpec("28", "sid", PACKAGES, "Engine 28.5 + containerd 2.1"),
}


class FetchError(RuntimeError):
    """The engine packages could not be downloaded or unpacked."""


def cache_root() -> Path:
    override = os.environ.get(CACHE_ENV)
    return Path(override) if override else REPO_ROOT / ".cache" / "engines"


def engine_dir(key: str) -> Path:
    return cache_root() / spec(key).key


def spec(key: str) -> EngineSpec:
    try:
        return ENGINES[key]
    except KeyError:
        known = ", ".join(sorted(ENGINES))
        raise FetchError(f"unknown engine key {key!r} (known: {known})") from None


def engine_bin_dirs(key: str) -> list[Path]:
    root = engine_dir(key)
    return [root / "usr" / "bin", root / "usr" / "sbin"]


def is_fetched(key: str) -> bool:
    # A cache made before a package was added to the spec counts as incomplete.
    return set(spec(key).packages) <= set(fetched_versions(key))


def fetched_versions(key: str) -> dict[str, str]:
    """Package name -> Debian version of a complete cache (empty if not fetched)."""
    marker = engine_dir(key) / MARKER
    if not marker.is_file():
        return {}
    data = json.loads(marker.read_text())
    return {str(k): str(v) for k, v in data.get("packages", {}).items()}


def ensure_engine(key: str) -> Path:
    """Make sure the engine's binaries are unpacked in the cache; return the cache dir."""
    target = engine_dir(key)
    if is_fetched(key):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Several pytest sessions may run at once in one checkout: only one may download.
    with locked(target.parent / f".{key}.lock"):
        if is_fetched(key):
            return target
        _fetch_into(spec(key), target)
    return target


def docker_cli() -> str:
    """The docker CLI: the machine's own if it has one, else the fetched Debian one."""
    found = shutil.which("docker")
    if found:
        return found
    cached = [engine_bin_dirs(key)[0] / "docker" for key in sorted(ENGINES) if is_fetched(key)]
    if cached:
        return str(cached[0])
    ensure_engine(min(ENGINES))
    return str(engine_bin_dirs(min(ENGINES))[0] / "docker")


def compose_cli(key: str) -> str:
    """The docker compose v2 plugin of the engine's Debian suite (it also runs standalone,
    aimed with DOCKER_HOST)."""
    return str(ensure_engine(key) / "usr" / "libexec" / "docker" / "cli-plugins"
               / "docker-compose")


def buildx_plugin(key: str) -> Path:
    """The docker buildx plugin of the engine's Debian suite (0.13 for 26, 0.29 for 28)."""
    return ensure_engine(key) / "usr" / "libexec" / "docker" / "cli-plugins" / "docker-buildx"


def mirror_uri() -> str:
    """First Debian mirror URI this machine's apt is configured with."""
    if DEBIAN_SOURCES.is_file():
        for line in DEBIAN_SOURCES.read_text().splitlines():
            if line.strip().startswith("URIs:"):
                uris = line.split(":", 1)[1].split()
                if uris:
                    return uris[0]
    if LEGACY_SOURCES.is_file():
        for line in LEGACY_SOURCES.read_text().splitlines():
            words = [w for w in line.split() if not w.startswith("[")]
            if len(words) >= 2 and words[0] == "deb" and "://" in words[1]:
                return words[1]
    raise FetchError(
        f"no Debian mirror found in {DEBIAN_SOURCES} or {LEGACY_SOURCES}; "
        "engines are fetched from the machine's configured Debian mirror"
    )


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive flock on `path`: one builder of a cache at a time, across processes."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fetch_into(engine: EngineSpec, target: Path) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise FetchError("fetching engines needs apt-get and dpkg (a Debian machine)")
    with tempfile.TemporaryDirectory(prefix=f"cm-fetch-{engine.key}-") as tmp:
        work = Path(tmp)
        debs = _download(engine, work)
        # Unpack next to the target, then rename: a crash never leaves a half cache that
        # looks complete, and readers never see a partially extracted tree.
        staging = Path(tempfile.mkdtemp(prefix=f".{engine.key}-", dir=target.parent))
        try:
            versions: dict[str, str] = {}
            for deb in debs:
                run_checked(["dpkg-deb", "-x", str(deb), str(staging)])
                name = run_checked(["dpkg-deb", "-f", str(deb), "Package"]).strip()
                versions[name] = run_checked(["dpkg-deb", "-f", str(deb), "Version"]).strip()
            missing = [p for p in engine.packages if p not in versions]
            if missing:
                raise FetchError(f"apt-get download did not fetch {missing}")
            marker = {"suite": engine.suite, "packages": versions}
            (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            # Running daemons may still exec shims from the old tree: swap with two renames
            # (a window of microseconds) and delete the old tree only afterwards.
            retired = target.with_name(f".{engine.key}-retired-{os.getpid()}")
            if target.exists():
                target.rename(retired)
            staging.rename(target)
            shutil.rmtree(retired, ignore_errors=True)
        finally:
            if staging.exists():
                shutil.rmtree(staging)


def _download(engine: EngineSpec, work: Path) -> list[Path]:
    sources = work / "sources.list"
    sources.write_text(f"deb [signed-by={KEYRING}] {mirror_uri()} {engine.suite} main\n")
    (work / "lists" / "partial").mkdir(parents=True)
    (work / "cache" / "archives" / "partial").mkdir(parents=True)
    downloads = work / "debs"
    downloads.mkdir()
    # Private lists/cache dirs keep the machine's own apt state untouched; the sandbox
    # user option avoids the _apt user, which cannot write into our private temp dir.
    apt = [
        "apt-get",
        "-q",
        "-o", f"Dir::Etc::SourceList={sources}",
        "-o", "Dir::Etc::SourceParts=/dev/null",
        "-o", f"Dir::State::Lists={work / 'lists'}",
        "-o", f"Dir::Cache={work / 'cache'}",
        "-o", "APT::Sandbox::User=root",
    ]  # fmt: skip
    run_checked([*apt, "update"])
    run_checked([*apt, "download", *engine.packages], cwd=downloads)
    debs = sorted(downloads.glob("*.deb"))
    if not debs:
        raise FetchError(f"apt-get download produced no .deb files for {engine.packages}")
    return debs


def run_checked(argv: list[str], cwd: Path | None = None) -> str:
    """Run a tool; its stdout, or FetchError with the tail of its output."""
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).splitlines()[-15:])
        raise FetchError(f"{' '.join(argv[:1] + argv[-2:])} failed ({result.returncode}):\n{tail}")
    return result.stdout
