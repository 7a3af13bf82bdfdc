"""Populate a sandbox daemon with a realistic host: images, tags, containers, a volume.

No registry is reachable, so every image is built FROM scratch around a static busybox with
the legacy builder, imported from a tarball, or loaded from a `docker save`-format archive
crafted here (fast enough for the hundreds of images the benchmarks need).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from migrate.sandbox.daemon import Sandbox
from migrate.sandbox.fetch import docker_cli
from migrate.sandbox.layers import ArchiveImage, load_images, random_layer, rootfs_layer

BUSYBOX = Path("/usr/bin/busybox")
APPLETS = ("sh", "sleep", "cat", "echo", "ls", "true", "false", "wc", "env", "id", "mkdir")
MIB = 1024 * 1024
MULTI_TAGS = ("cm-sample/app:latest", "cm-sample/app:1.0", "registry.example.com:5000/team/app:1.0")
SAMPLES_FILE = "samples.json"
BUSY_LOOP = 'trap "exit 0" TERM; sleep 3600 & wait'


class SampleError(RuntimeError):
    """A docker command needed to build the sample host failed."""


@dataclass(frozen=True)
class SampleHost:
    """What build_sample_host created, for tests to assert on.

    `tags` lists every tag; `image_ids` maps each tag to its legacy image ID (config digest).
    `containers` maps name -> expected State.Status. `volumes` are the named volumes only:
    the created container of `configured_image` also owns an anonymous volume (VOLUME).
    `volume_files` maps "<volume>/<path>" -> content written into it.
    """

    host: str
    base_image: str
    tags: tuple[str, ...]
    multi_tags: tuple[str, ...]
    configured_image: str
    imported_image: str
    big_image: str
    big_layer_bytes: int
    image_ids: dict[str, str]
    dangling_ids: tuple[str, ...]
    containers: dict[str, str]
    volumes: tuple[str, ...]
    volume_files: dict[str, str]
    compose_project: str
    compose_containers: tuple[str, ...]


def docker(
    host: str, *args: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI against `host` with the legacy builder and no inherited DOCKER_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_BUILDKIT"] = "0"
    result = subprocess.run(
        [docker_cli(), "-H", host, *args],
        input=stdin, capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise SampleError(f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


def inspect(host: str, kind: str, name: str) -> Any:
    return json.loads(docker(host, kind, "inspect", name).stdout)[0]


def image_id(host: str, ref: str) -> str:
    return str(inspect(host, "image", ref)["Id"])


def dangling_image_ids(host: str) -> set[str]:
    out = docker(host, "images", "--filter", "dangling=true", "--no-trunc", "-q").stdout
    return set(out.split())


def _build(host: str, context: Path, dockerfile: str, *tags: str) -> str:
    path = context / f"Dockerfile.{tags[0].replace('/', '_').replace(':', '_')}"
    path.write_text(dockerfile)
    tag_args = [arg for tag in tags for arg in ("-t", tag)]
    docker(host, "build", "-q", "-f", str(path), *tag_args, str(context))
    return image_id(host, tags[0])


def _prepare_context(context: Path, big_layer_bytes: int) -> None:
    bin_dir = context / "rootfs" / "bin"
    bin_dir.mkdir(parents=True)
    shutil.copy2(BUSYBOX, bin_dir / "busybox")
    for applet in APPLETS:
        (bin_dir / applet).symlink_to("busybox")
    etc = context / "rootfs" / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/srv:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\napp:x:1000:\n")
    (etc / "os-release").write_text('ID=cm-sample\nPRETTY_NAME="containerd-migrate sample"\n')
    for app in ("web", "worker", "app"):
        (context / app).mkdir()
        (context / app / "main.sh").write_text(f"#!/bin/sh\necho {app} says hello\n")
        (context / app / "VERSION").write_text(f"{app}-1\n")
    with (context / "big.bin").open("wb") as out:
        random_layer_bytes(out, big_layer_bytes)


def random_layer_bytes(out: Any, size: int) -> None:
    remaining = size
    while remaining > 0:
        chunk = os.urandom(min(MIB, remaining))
        out.write(chunk)
        remaining -= len(chunk)


CONFIGURED = """FROM cm-sample/base:1
LABEL org.opencontainers.image.title="configured" com.example.team="shop"
ENV APP_MODE=production GREETING="hello world"
WORKDIR /srv/app
USER 1000:1000
EXPOSE 8080/tcp 9090/udp
VOLUME ["/srv/data"]
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo configured; id"]
"""


def build_sample_host(
    host: str, *, big_layer_bytes: int = 8 * MIB, workdir: Path | None = None
) -> SampleHost:
    """Build the sample host described by SampleHost into the (legacy-mode) daemon at host."""
    with tempfile.TemporaryDirectory(prefix="cm-samples-", dir=workdir) as tmp:
        ctx = Path(tmp)
        _prepare_context(ctx, big_layer_bytes)
        ids: dict[str, str] = {}
        base = "cm-sample/base:1"
        ids[base] = _build(
            host, ctx, 'FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nCMD ["sh"]\n', base
        )
        for app in ("web", "worker"):
            tag = f"cm-sample/{app}:1"
            ids[tag] = _build(
                host, ctx, f'FROM {base}\nCOPY {app}/ /app/\nCMD ["sh", "/app/main.sh"]\n', tag
            )
        multi_id = _build(
            host, ctx, f'FROM {base}\nCOPY app/ /app/\nCMD ["sh", "/app/main.sh"]\n', *MULTI_TAGS
        )
        ids.update(dict.fromkeys(MULTI_TAGS, multi_id))
        ids["cm-sample/configured:1"] = _build(host, ctx, CONFIGURED, "cm-sample/configured:1")
        ids["cm-sample/big:1"] = _build(
            host, ctx, f"FROM {base}\nCOPY big.bin /data/big.bin\n", "cm-sample/big:1"
        )
        dangling = []
        for version in ("v1", "v2"):
            (ctx / "rebuilt.txt").write_text(f"rebuilt {version}\n")
            old = _build(
                host, ctx, f"FROM {base}\nCOPY rebuilt.txt /rebuilt.txt\n", "cm-sample/rebuilt:1"
            )
            dangling.append(old)
        ids["cm-sample/rebuilt:1"] = dangling.pop()
        ids["cm-sample/imported:1"] = _import(host, ctx, "cm-sample/imported:1")
    if not set(dangling) <= dangling_image_ids(host):
        raise SampleError(f"rebuilt image {dangling} did not become dangling (<none>)")
    containers, files = _containers(host)
    return SampleHost(
        host=host,
        base_image=base,
        tags=tuple(sorted(ids)),
        multi_tags=MULTI_TAGS,
        configured_image="cm-sample/configured:1",
        imported_image="cm-sample/imported:1",
        big_image="cm-sample/big:1",
        big_layer_bytes=big_layer_bytes,
        image_ids=ids,
        dangling_ids=tuple(dangling),
        containers=containers,
        volumes=("cm-sample-data",),
        volume_files=files,
        compose_project="shop",
        compose_containers=("cm-sample-web",),
    )


def _import(host: str, ctx: Path, tag: str) -> str:
    rootfs = ctx / "imported"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "imported.txt").write_text("imported from a tarball\n")
    (rootfs / "hello.txt").write_text("hello from docker import\n")
    tarball = ctx / "imported.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
    docker(host, "import", "-m", "cm-sample import", "-c", 'CMD ["/hello.txt"]', str(tarball), tag)
    return image_id(host, tag)


def _containers(host: str) -> tuple[dict[str, str], dict[str, str]]:
    docker(host, "volume", "create", "--label", "com.example.purpose=sample", "cm-sample-data")
    script = "echo sample-data > /data/hello.txt && echo job-output > /job-output.txt && exit 3"
    job = docker(host, "run", "--name", "cm-sample-job", "-v", "cm-sample-data:/data",
                 "cm-sample/worker:1", "sh", "-c", script, check=False)  # fmt: skip
    if job.returncode != 3:
        raise SampleError(f"sample job exited {job.returncode}: {job.stderr}")
    docker(host, "run", "-d", "--name", "cm-sample-web",
           "--label", "com.docker.compose.project=shop",
           "--label", "com.docker.compose.service=web",
           "--label", "com.docker.compose.container-number=1",
           "-v", "cm-sample-data:/data:ro", "cm-sample/web:1", "sh", "-c", BUSY_LOOP)  # fmt: skip
    docker(host, "create", "--name", "cm-sample-created", "cm-sample/configured:1")
    containers = {"cm-sample-web": "running", "cm-sample-job": "exited",
                  "cm-sample-created": "created"}  # fmt: skip
    for name, state in containers.items():
        actual = inspect(host, "container", name)["State"]["Status"]
        if actual != state:
            raise SampleError(f"container {name} is {actual}, expected {state}")
    return containers, {"cm-sample-data/hello.txt": "sample-data\n"}


def save_sample_host(samples: SampleHost, path: Path) -> None:
    path.write_text(json.dumps(asdict(samples), indent=2) + "\n")


def load_sample_host(path: Path) -> SampleHost:
    data = json.loads(path.read_text())
    for key, value in data.items():
        if isinstance(value, list):
            data[key] = tuple(value)
    return SampleHost(**data)


def build_bulk_images(
    host: str, count: int, *, prefix: str = "cm-bulk/app", layer_bytes: int = 4096,
    workdir: Path | None = None,
) -> list[str]:  # fmt: skip
    """`count` small images `<prefix>-NNNN:1` sharing one busybox base layer; one docker load."""
    with tempfile.TemporaryDirectory(prefix="cm-bulk-", dir=workdir) as tmp:
        base = rootfs_layer(Path(tmp), BUSYBOX, APPLETS)
        images = [
            ArchiveImage(
                tags=(f"{prefix}-{i:04d}:1",),
                layers=(base, random_layer(Path(tmp), f"app-{i}", layer_bytes)),
                cmd=("sh", "-c", f"echo bulk image {i}"),
            )
            for i in range(count)
        ]
        load_images(host, images)
    return [tag for image in images for tag in image.tags]


def build_large_images(
    host: str, total_bytes: int, count: int = 5, *, prefix: str = "cm-large/img",
    workdir: Path | None = None,
) -> list[str]:  # fmt: skip
    """`count` images sharing a base, with random layers totalling about `total_bytes`."""
    per_image = max(total_bytes // max(count, 1), 1)
    with tempfile.TemporaryDirectory(prefix="cm-large-", dir=workdir) as tmp:
        base = rootfs_layer(Path(tmp), BUSYBOX, APPLETS)
        images = [
            ArchiveImage(
                tags=(f"{prefix}-{i:02d}:1",),
                layers=(base, random_layer(Path(tmp), f"data-{i}", per_image)),
                cmd=("sh",),
            )
            for i in range(count)
        ]
        load_images(host, images)
    return [tag for image in images for tag in image.tags]


def populate_sandbox(sandbox: Sandbox, *, big_layer_bytes: int = 8 * MIB) -> SampleHost:
    """Build the sample host in a running sandbox and record it as D/samples.json."""
    samples = build_sample_host(sandbox.host, big_layer_bytes=big_layer_bytes, workdir=sandbox.dir)
    save_sample_host(samples, sandbox.dir / SAMPLES_FILE)
    return samples


def sandbox_samples(sandbox: Sandbox) -> SampleHost:
    """The sample host recorded by populate_sandbox (works from another process)."""
    return load_sample_host(sandbox.dir / SAMPLES_FILE)
