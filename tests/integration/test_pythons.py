"""The agent on every Python it supports (3.9 to 3.13): its test suite, and a real report to
a real collector (which runs on this suite's own Python, 3.11 or newer).

Each Python comes from pyenv; its virtualenv is built by ``scripts/agent-python VERSION``
(``.ci/run`` builds them first) and cached outside the clone. A Python or a virtualenv that is
missing skips with a reason: building one downloads packages, which a test must not do.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers import CollectorProcess, clean_environment

REPO = Path(__file__).resolve().parent.parent.parent
SCRIPT = REPO / "scripts" / "agent-python"
SUPPORTED = ("3.9.18", "3.10.13", "3.11.7", "3.12.1", "3.13.0")

pytestmark = [pytest.mark.slow]


def _find_venv(version: str) -> Path | str:
    """The cached virtualenv of the agent on Python ``version``, or why there is none."""
    interpreter = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions" / version
    if not interpreter.is_dir():
        return f"Python {version} is not installed here ({interpreter})"
    found = subprocess.run(
        [str(SCRIPT), version],
        env={**os.environ, "FLEETWATCH_PYTHON_NO_BUILD": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode != 0:
        return f"run scripts/agent-python {version} first ({found.stderr.strip()})"
    return Path(found.stdout.strip())


def agent_venv(version: str) -> Path:
    """The cached virtualenv of the agent on Python ``version``; skips when it is not built."""
    venv = _find_venv(version)
    if isinstance(venv, str):
        pytest.skip(venv)
    return venv


def _agent_suite(venv: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin/python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/agent", "tests/core"],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")},
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def agent_suites() -> Iterator[dict[str, Future[subprocess.CompletedProcess[str]]]]:
    """The agent's test suite under every Python that has its virtualenv, two at a time: one
    run alone leaves a core of a two-core machine idle whenever it waits. Each test waits for
    its own Python's run."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        venvs = {version: _find_venv(version) for version in SUPPORTED}
        yield {
            version: pool.submit(_agent_suite, venv)
            for version, venv in venvs.items()
            if isinstance(venv, Path)
        }


@pytest.mark.timeout(900)  # the wait for a run that has 600 s of its own
@pytest.mark.parametrize("version", SUPPORTED)
def test_the_agent_test_suite_passes(
    version: str, agent_suites: dict[str, Future[subprocess.CompletedProcess[str]]]
) -> None:
    """tests/agent and tests/core pass under this Python (collector parts skip below 3.11)."""
    agent_venv(version)
    done = agent_suites[version].result()
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in summary
    assert " failed" not in summary


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    """One collector for every Python's agent: each reports as a host of its own."""
    tmp_path = tmp_path_factory.mktemp("pythons")
    with clean_environment():
        process = CollectorProcess(tmp_path, f"sqlite:///{tmp_path / 'fleetwatch.db'}").start()
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.parametrize("version", SUPPORTED)
def test_the_agent_reports_to_a_real_collector(
    version: str, tmp_path: Path, collector: CollectorProcess
) -> None:
    """`fleetwatch-agent run --once` under this Python enrolls and delivers a full report."""
    venv = agent_venv(version)
    python = subprocess.run(
        [str(venv / "bin/python"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert python.split()[1] == version
    host = f"python-{version.replace('.', '-')}"
    done = subprocess.run(
        [str(venv / "bin/fleetwatch-agent"), "run", "--once"],
        env=collector.agent_env(tmp_path / "agent", host),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reports = collector.api(f"/api/v1/hosts/{host}/reports")
    assert [r["sequence"] for r in reports] == [1]
    stored = collector.api(f"/api/v1/hosts/{host}")
    assert stored["host_id"] == host


def test_the_collector_refuses_an_older_python_in_one_line() -> None:
    """`fleetwatch` (the collector's command) under Python 3.9 says what it needs, no traceback."""
    venv = agent_venv(SUPPORTED[0])
    done = subprocess.run(
        [str(venv / "bin/fleetwatch"), "serve"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    expected = (
        f"fleetwatch: the collector needs Python 3.11 or newer; this is Python {SUPPORTED[0]} "
        f"({venv}/bin/python). The agent alone runs on 3.9 and newer."
    )
    assert done.stderr.strip().splitlines() == [expected]
