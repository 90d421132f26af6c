"""The directory where the workers of ``fleetwatch serve`` keep their metrics for each other.

prometheus_client's multiprocess mode: each worker writes its counters, gauges and
histograms to memory-mapped files named by metric kind and process id, and a scrape adds up
every file (`web.metrics`). The library chooses the mode once, when it is first imported,
from ``PROMETHEUS_MULTIPROC_DIR``: ``serve`` calls `prepare_metrics_dir` before anything
imports it, and the workers it starts inherit the variable. This module imports nothing of
prometheus_client at its own import, for that reason.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# The environment variable prometheus_client reads, at import, to choose multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_metrics_dir(given: Path | None) -> tuple[Path, bool]:
    """The directory the workers of ``fleetwatch serve`` keep their metrics in, emptied, and
    named in the environment they inherit; (its path, whether it was made here and is to be
    removed at exit). Call before anything imports prometheus_client: it chooses its mode
    once, at import, from the environment."""
    made = given is None
    path = Path(tempfile.mkdtemp(prefix="fleetwatch-metrics-")) if given is None else given
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    # values of an earlier run would be added to this one's
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(path)
    os.environ["FLEETWATCH_METRICS_DIR"] = str(path)
    return path, made


def remove_metrics_dir(path: Path) -> None:
    """Remove the directory `prepare_metrics_dir` made."""
    shutil.rmtree(path, ignore_errors=True)


def forget_dead_workers(path: Path) -> list[int]:
    """Drop the live gauges of workers that are gone (a worker uvicorn replaced), so that
    the queue depth is not summed with a dead process's last value; their counters stay,
    so totals never go down. Returns the process ids forgotten."""
    from prometheus_client.multiprocess import mark_process_dead  # noqa: PLC0415  (see above)

    dead = []
    for gauge in path.glob("gauge_live*_*.db"):
        pid = int(gauge.stem.rsplit("_", 1)[1])
        if not _alive(pid):
            dead.append(pid)
    for pid in sorted(set(dead)):
        mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
    return sorted(set(dead))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
