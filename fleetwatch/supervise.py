"""A small supervisor for hosts without systemd: run a command, restart it when it dies.

    python -m agent.supervise -- /opt/fleetwatch/agent/bin/fleetwatch-agent run

It imports nothing beyond the standard library, so it costs a few megabytes. SIGTERM and
SIGINT are passed on to the command, and the supervisor exits when the command has. A command
that keeps failing is restarted after growing pauses (up to a minute); one that ran for a while
before it failed is restarted after a second.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import FrameType

MIN_UPTIME = 60.0
MAX_DELAY = 60.0


def _say(message: str) -> None:
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    print(
        f'{{"timestamp": "{stamp}", "level": "warning", "event": "{message}", '
        f'"logger": "supervise"}}',
        file=sys.stderr,
        flush=True,
    )


def supervise(
    argv: list[str], *, min_uptime: float = MIN_UPTIME, max_delay: float = MAX_DELAY
) -> int:
    stopping = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
        stopping.set()
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    delay = 1.0
    code = 0
    while not stopping.is_set():
        started = time.monotonic()
        child = subprocess.Popen(argv)  # noqa: S603  (the command this supervisor was given)
        code = child.wait()
        if stopping.is_set():
            break
        ran = time.monotonic() - started
        delay = 1.0 if ran >= min_uptime else min(max_delay, delay * 2)
        _say(f"command exited with status {code} after {ran:.0f} s; restarting in {delay:g} s")
        stopping.wait(delay)
    return max(code, 0)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m agent.supervise -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    return supervise(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
