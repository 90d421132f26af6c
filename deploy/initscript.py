"""A service on hosts without systemd: the start-stop-daemon commands that run it, and the
sysvinit script (``/etc/init.d/NAME``) that runs them again at every boot.

Both the pyinfra deploy (hosts whose init is sysvinit) and the Debian packages
(`fleetwatch.deploy.debian`) install the script this module writes, so a host runs its
fleetwatch service the same way whichever of the two put it there. The process runs under
``python -m fleetwatch.supervise``, which restarts it when it dies, as the user given, with no
new privileges and only the capabilities given (dropped to with ``setpriv``).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field


def start_command(
    pidfile: str, log: str, user: str, capabilities: list[str], argv: list[str]
) -> str:
    """Start ``argv`` in the background as ``user``, its output appended to ``log``."""
    caps = ",".join(f"+{c.lower().removeprefix('cap_')}" for c in capabilities)
    drop = ["/usr/bin/setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]
    if caps:
        drop += [f"--inh-caps={caps}", f"--ambient-caps={caps}", f"--bounding-set=-all,{caps}"]
    else:
        drop += ["--bounding-set=-all"]
    drop.append("--no-new-privs")
    return shlex.join(
        [
            "start-stop-daemon",
            "--start",
            "--background",
            "--make-pidfile",
            "--pidfile",
            pidfile,
            "--output",
            log,
            "--startas",
            drop[0],
            "--",
            *drop[1:],
            *argv,
        ]
    )


def stop_command(pidfile: str) -> str:
    """Stop what ``pidfile`` names (TERM, then KILL after 30 s); nothing running is fine."""
    return (
        f"start-stop-daemon --stop --pidfile {shlex.quote(pidfile)} --remove-pidfile "
        "--retry TERM/30/KILL/5 --oknodo"
    )


@dataclass(frozen=True)
class InitScript:
    """What a sysvinit script needs to know about the service it runs."""

    service: str  # "fleetwatch-agent": the script's name and the pidfile's
    description: str
    user: str
    command: list[str]  # the program, run under the supervisor
    supervisor: list[str]  # ["/opt/fleetwatch/agent/bin/python", "-m", "fleetwatch.supervise"]
    log: str
    capabilities: list[str] = field(default_factory=list)
    # A shell test that says whether the service is set up to run, and the line printed
    # (and the start skipped) when it is not: a package installed before its settings exist.
    configured: str = "true"
    unconfigured_message: str = ""
    requires: str = ""  # the program whose absence means "removed": command[0] by default

    @property
    def pidfile(self) -> str:
        return f"/run/{self.service}.pid"

    @property
    def path(self) -> str:
        return f"/etc/init.d/{self.service}"

    def text(self) -> str:
        """The script: LSB headers (for update-rc.d), start, stop, restart and status."""
        start = start_command(
            self.pidfile,
            self.log,
            self.user,
            self.capabilities,
            [*self.supervisor, "--", *self.command],
        )
        program = shlex.quote(self.requires or self.command[0])
        return f"""#!/bin/sh
### BEGIN INIT INFO
# Provides:          {self.service}
# Required-Start:    $remote_fs $network $syslog
# Required-Stop:     $remote_fs $network $syslog
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: {self.description}
### END INIT INFO
# Written by fleetwatch for hosts without systemd: keeps {self.service} running under
# fleetwatch.supervise, which restarts it when it dies; started again at every boot.

PATH=/usr/sbin:/usr/bin:/sbin:/bin
NAME={self.service}
PIDFILE={self.pidfile}

# Removed but not purged: the program is gone, the script stays until purge.
[ -x {program} ] || exit 0

running() {{
    start-stop-daemon --status --pidfile "$PIDFILE"
}}

do_start() {{
    if running; then
        echo "$NAME is already running"
        return 0
    fi
    if ! {self.configured}; then
        echo {shlex.quote(f"{self.service} not started: {self.unconfigured_message}")}
        return 0
    fi
    {start}
}}

do_stop() {{
    {stop_command(self.pidfile)}
}}

case "$1" in
    start) do_start ;;
    stop) do_stop ;;
    restart|force-reload) do_stop && do_start ;;
    status)
        if running; then echo "$NAME is running"; exit 0; fi
        echo "$NAME is not running"
        exit 3
        ;;
    *)
        echo "Usage: $0 {{start|stop|restart|force-reload|status}}" >&2
        exit 3
        ;;
esac
"""
