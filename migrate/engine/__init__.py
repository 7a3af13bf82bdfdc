"""The Docker boundary: the only package that imports `docker`.

`client` talks to the Engine API and returns frozen models; `convert` turns raw API
answers into those models (pure); `restart` runs the host's restart command and waits
until the daemon answers in the image store asked for.
"""

from migrate.engine.client import Engine, probe

__all__ = ["Engine", "probe"]
