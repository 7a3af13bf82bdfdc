"""The host around the daemon: daemon.json (`daemon_json`), how dockerd is launched
(`launch`), what systemd says and resetting its start limit (`systemd`), processes by pid
and start time from /proc (`processes`), the command that restarts dockerd and running it
(`restart_command`), `rehearse`'s throwaway dockerd (`throwaway`), and crash- and
disk-full-safe filesystem helpers (`fs`)."""
