"""The host around the daemon: daemon.json (`daemon_json`), how dockerd is launched
(`launch`), and crash- and disk-full-safe filesystem helpers (`fs`)."""
