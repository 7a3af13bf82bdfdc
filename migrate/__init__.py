"""containerd-migrate: move a Docker Engine host to the containerd image store."""

__version__ = "0.1.0"
