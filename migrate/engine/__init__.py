"""The Docker boundary: the only package that imports `docker`.

`client` talks to the Engine API and returns frozen models, reading through a
`transport.Reads` (`unix_http` on a local socket, `sdk_reads` elsewhere); `legacy_store`
reads the data root's legacy-store files; `convert` turns raw API answers into models
(pure); `daemon_wait` waits, after a restart (host/restart_command.py), until the daemon
answers in the image store asked for; `containerd` runs `ctr` against dockerd's containerd
(pre-staging, the tool's images in the containerd store).
"""

from migrate.engine.client import Engine, probe

__all__ = ["Engine", "probe"]
