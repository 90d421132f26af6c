"""fleetwatch collector: receives agent reports, holds each host against its baseline."""

import sys

if sys.version_info < (3, 11):  # noqa: UP036 - the agent alone runs on older Pythons
    # One line instead of a traceback from whichever dependency or syntax fails first.
    raise SystemExit(
        f"fleetwatch: the collector needs Python 3.11 or newer; this is Python "
        f"{sys.version.split()[0]} ({sys.executable}). The agent alone runs on 3.9 and newer."
    )
