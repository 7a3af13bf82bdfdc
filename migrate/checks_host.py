"""Pre-flight checks about what the host holds: containers, volumes and images the switch
hides or changes, and the free disk space the export and the new store need.

They are registered, with the daemon and engine checks, in `migrate.checks.CHECKS`,
which re-exports them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from migrate.checks_base import BLOCKER, INFO, WARNING, Check, Ctx, _check

if TYPE_CHECKING:  # plan.py imports the checks at runtime
    from migrate.plan import FilesystemFacts

DISK_HEADROOM = 1.2
GIB = 1024**3
MIB = 1024**2


def containers_present(c: Ctx) -> Check | None:
    containers = c.inv.containers
    if not containers:
        return None
    running = sum(ct.running for ct in containers)
    details = [f"{ct.name} ({ct.state}, image {ct.image})" for ct in containers]
    message = f"{len(containers)} container(s), {running} running"
    if c.options.containers == "leave":
        return _check("containers-present", WARNING,
                      f"{message}: they will be hidden after the switch, running ones stopped",
                      "they come back, writable layers intact, after a rollback", details)
    return _check("containers-present", BLOCKER, f"{message} would be hidden by the switch",
                  "remove them, or pass --containers leave to stop and keep them in the "
                  "legacy store", details)


def volumes_only_used_by_containers(c: Ctx) -> Check | None:
    used = [v for v in c.inv.volumes if v.used_by]
    if not used:
        return None
    return _check("volumes-only-used-by-containers", WARNING,
                  f"{len(used)} volume(s) will look unused once their containers are hidden",
                  "do not run docker volume rm/prune after the switch: it would delete them and "
                  "break the rollback",
                  [f"{v.name} (used by {', '.join(v.used_by)})" for v in used])


def registry_digests(c: Ctx) -> Check | None:
    pulled = [img for img in c.inv.images if img.repo_digests]
    if not pulled:
        return None
    return _check("registry-digests", WARNING,
                  f"{len(pulled)} image(s) lose their registry digests (RepoDigests)",
                  "image@sha256:<digest> references stop resolving until re-pulled; each tag "
                  "gets a synthetic repo@<new id>",
                  [f"{', '.join(img.tags) or img.id}: {', '.join(img.repo_digests)}"
                   for img in pulled])


def dangling_images(c: Ctx) -> Check | None:
    dangling = c.inv.dangling_images
    if not dangling:
        return None
    return _check("dangling-images", INFO,
                  f"{len(dangling)} untagged image(s) are exported separately by ID",
                  "they come back as <none>", [img.id for img in dangling])


def _size(size: int) -> str:
    # Not GiB alone: a small host (or a small state-dir filesystem) would read "0.0 GiB free,
    # needs 0.0 GiB".
    return f"{size / GIB:.1f} GiB" if size >= GIB else f"{size / MIB:.1f} MiB"


def _disk(id_: str, fs: FilesystemFacts, need: int, what: str, hint: str) -> Check | None:
    if fs.free_bytes is None:
        return _check(id_, WARNING, f"cannot measure free space for {fs.path}",
                      f"make sure {_size(need)} are free for {what}")
    text = f"{fs.path}: {_size(fs.free_bytes)} free, {what} needs {_size(need)}"
    if fs.free_bytes < need:
        return _check(id_, BLOCKER, text, hint)
    if fs.free_bytes < need * DISK_HEADROOM:
        return _check(id_, WARNING, f"{text} (less than 20% headroom)")
    return None


def disk_state_dir(c: Ctx) -> Check | None:
    if c.facts.shared_filesystem:
        return None  # disk-data-root reports the combined need of the shared filesystem
    return _disk("disk-state-dir", c.facts.state_dir, c.estimate.state_dir_need_bytes,
                 "the export archives", "free space there or pick another --state-dir")


def disk_data_root(c: Ctx) -> Check | None:
    what = "save staging + the new store"
    if c.facts.shared_filesystem:
        what = "archives + save staging + the new store (state dir on the same filesystem)"
    return _disk("disk-data-root", c.facts.data_root, c.estimate.data_root_need_bytes, what,
                 "free space on the data-root filesystem; the legacy data stays until cleanup")



def no_images(c: Ctx) -> Check | None:
    if c.inv.images:
        return None
    return _check("no-images", INFO, "no images: only the daemon switch is needed")
