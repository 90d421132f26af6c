"""Running the host's own tools: one place that sets the locale, timeout and error text."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence

CommandRunner = Callable[[Sequence[str], float], str]
"""Runs argv with a timeout in seconds and returns its standard output."""


class CommandError(RuntimeError):
    """A command that could not run, failed, or ran out of time."""


def run_command(argv: Sequence[str], timeout: float) -> str:
    """Run a command in the C locale; raise CommandError with its stderr if it fails."""
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "LANGUAGE": ""}
    try:
        done = subprocess.run(  # noqa: S603  (argv is fleetwatch's own, never from input)
            list(argv),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env=env,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError as exc:
        msg = f"{argv[0]}: command not found"
        raise CommandError(msg) from exc
    except subprocess.TimeoutExpired as exc:
        msg = f"{argv[0]}: no answer within {timeout:g} s"
        raise CommandError(msg) from exc
    if done.returncode != 0:
        detail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        msg = f"{argv[0]} failed: {detail[0][:500]}"
        raise CommandError(msg)
    return done.stdout
