"""Facts fleetwatch's deploys read from hosts."""

from __future__ import annotations

import json
from typing import Any

from pyinfra.api import FactBase

_RUNTIME = (
    "import json, os, platform, sys; print(json.dumps({"
    "'python': '%d.%d' % sys.version_info[:2], 'machine': platform.machine(), "
    "'libc': platform.libc_ver()[1], 'systemd': os.path.isdir('/run/systemd/system'), "
    "'init': 'systemd' if os.path.isdir('/run/systemd/system') else 'openrc' "
    "if os.path.exists('/run/openrc') else 'runit' if os.path.isdir('/run/runit') "
    "else 'sysvinit' if os.path.exists('/usr/sbin/update-rc.d') else 'unknown', "
    "'venv': __import__('importlib.util').util.find_spec('ensurepip') is not None}))"
)


class Runtime(FactBase[dict[str, Any]]):
    """The host's Python (version, C library, architecture) and its init system.

    Wheels are picked for the host from these; systemd hosts get a unit, others a daemon,
    which a sysvinit script starts again at boot where the init is sysvinit (``init``:
    systemd, sysvinit, openrc, runit or unknown).
    """

    def command(self, python: str = "python3") -> str:
        return f'{python} -c "{_RUNTIME}"'

    def process(self, output: list[str]) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(output[-1])
        return data


class DaemonStatus(FactBase[int]):
    """``start-stop-daemon --status`` for a pidfile: 0 running, 1 or 3 not running."""

    def command(self, pidfile: str) -> str:
        return f"start-stop-daemon --status --pidfile {pidfile}; echo $?"

    def process(self, output: list[str]) -> int:
        return int(output[-1])
