"""The deploy reads each host's Python with the Runtime fact and refuses, in one line, a host
whose Python is too old: run here against real interpreters from pyenv, as pyinfra runs the
fact's command on a host."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fleetwatch.deploy.deploys.runtime import COLLECTOR_PYTHON, python_refusal
from fleetwatch.deploy.facts import Runtime

PYENV = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions"


def _runtime(version: str) -> tuple[str, dict[str, Any]]:
    python = PYENV / version / "bin" / "python3"
    if not python.exists():
        pytest.skip(f"Python {version} is not installed here ({python})")
    fact = Runtime()
    done = subprocess.run(
        ["sh", "-c", fact.command(python=str(python))],
        capture_output=True,
        text=True,
        check=True,
    )
    return str(python), fact.process(done.stdout.splitlines())


class TestPythonRefusal:
    def test_a_host_with_python_3_8_is_refused_in_one_line(self) -> None:
        """Python 3.8 on a host: one line naming the host, its Python and what is needed."""
        python, runtime = _runtime("3.8.18")
        assert runtime["python"] == "3.8"
        assert runtime["init"] in {"systemd", "sysvinit", "openrc", "runit", "unknown"}
        refusal = python_refusal(runtime, python, "web-1")
        assert refusal == (
            f"web-1: {python} is Python 3.8; fleetwatch needs Python 3.9 or newer there "
            "(set fleetwatch_python to another interpreter)"
        )

    @pytest.mark.parametrize("version", ["3.9.18", "3.13.0"])
    def test_the_agent_takes_python_3_9_and_newer(self, version: str) -> None:
        """Python 3.9 and newer pass for the agent."""
        python, runtime = _runtime(version)
        assert python_refusal(runtime, python, "web-1") is None

    def test_the_collector_wants_python_3_11(self) -> None:
        """Python 3.10 is refused for the collector, 3.11 taken."""
        python, runtime = _runtime("3.10.13")
        refusal = python_refusal(runtime, python, "collector-1", COLLECTOR_PYTHON)
        assert refusal is not None
        assert "needs Python 3.11 or newer" in refusal
        python, runtime = _runtime("3.11.7")
        assert python_refusal(runtime, python, "collector-1", COLLECTOR_PYTHON) is None
