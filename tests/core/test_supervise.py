"""The supervisor used on hosts without systemd: restarts what dies, passes signals on."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

SUPERVISE = [sys.executable, "-m", "fleetwatch.supervise", "--"]


def test_restarts_a_command_that_dies(tmp_path: Path) -> None:
    counter = tmp_path / "starts"
    script = f"import pathlib; p = pathlib.Path({str(counter)!r}); p.write_text(p.read_text() + 'x' if p.exists() else 'x'); raise SystemExit(3)"
    supervisor = subprocess.Popen(
        [*SUPERVISE, sys.executable, "-c", script], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 20
        while (
            time.monotonic() < deadline and len(counter.read_text() if counter.exists() else "") < 3
        ):
            time.sleep(0.1)
        assert len(counter.read_text()) >= 3
    finally:
        supervisor.terminate()
        _, stderr = supervisor.communicate(timeout=20)
    assert "command exited with status 3" in stderr


def test_passes_sigterm_on_and_exits_with_the_command(tmp_path: Path) -> None:
    marker = tmp_path / "stopped"
    script = (
        "import signal, sys, time, pathlib\n"
        f"def stop(*a): pathlib.Path({str(marker)!r}).write_text('yes'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        f"pathlib.Path({str(marker)!r} + '.up').write_text('up')\n"
        "time.sleep(60)\n"
    )
    supervisor = subprocess.Popen([*SUPERVISE, sys.executable, "-c", script])
    deadline = time.monotonic() + 20
    while not Path(str(marker) + ".up").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=20) == 0
    assert marker.read_text() == "yes"
