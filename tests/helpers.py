"""Helpers shared by the tests: fixture paths, reports, a collector process."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from fleetwatch.schema import SECTION_TYPES, Report, section_hash

FIXTURES = Path(__file__).parent / "fixtures"
BIN = Path(sys.executable).parent
BASE_REPORT: dict[str, Any] = json.loads((FIXTURES / "reports" / "v1-debian12.json").read_text())

# The agent's tests also run on Python 3.9 and 3.10 (tests/integration/test_pythons.py); the
# parts of them that need the collector, which wants 3.11, skip there.
needs_collector = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="the collector needs Python 3.11 or newer"
)


@contextlib.contextmanager
def clean_environment() -> Iterator[None]:
    """No FLEETWATCH_* variable of the suite's own environment, for a fixture wider than a test
    (the autouse fixture that clears them is function-scoped, and starts after it)."""
    with pytest.MonkeyPatch.context() as clean:
        for key in [k for k in os.environ if k.startswith("FLEETWATCH_")]:
            clean.delenv(key)
        yield


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def section_data(name: str, **changes: Any) -> dict[str, Any]:
    """A section's data from the captured report, with some fields changed."""
    data = copy.deepcopy(BASE_REPORT["sections"][name]["data"])
    data.update(changes)
    return data


def full(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """A section sent in full, with the hash the agent would compute."""
    model = SECTION_TYPES[name].model_validate(data)  # type: ignore[index]
    return {"hash": section_hash(model), "data": data}


def make_report(
    host_id: str,
    sequence: int,
    sections: dict[str, Any] | None = None,
    *,
    instance_id: str = "a" * 32,
    collected_at: datetime | None = None,
    dropped: int = 0,
) -> dict[str, Any]:
    """A wire report; by default every section in full, as captured on a Debian 12 machine."""
    if sections is None:
        sections = {name: full(name, section_data(name)) for name in SECTION_TYPES}
    body = {
        "schema_version": 1,
        "host_id": host_id,
        "instance_id": instance_id,
        "sequence": sequence,
        "collected_at": (collected_at or datetime.now(timezone.utc)).isoformat(),
        "agent_version": "0.1.0",
        "delivery": {"dropped_reports": dropped},
        "sections": sections,
    }
    Report.model_validate(body)  # a test report is a valid report unless a test says otherwise
    return body


def ports_section(*listeners: tuple[str, str, int]) -> dict[str, Any]:
    return full(
        "ports",
        {
            "listeners": [
                {
                    "protocol": proto,
                    "address": address,
                    "port": port,
                    "pid": 100,
                    "process": "demo",
                    "user": "root",
                }
                for proto, address, port in listeners
            ]
        },
    )


class CollectorProcess:
    """The real `fleetwatch serve` in a subprocess on a free loopback port."""

    def __init__(
        self,
        tmp_path: Path,
        database_url: str,
        policy: Path | None = None,
        extra_env: dict[str, str] | None = None,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        """``tls`` is (certificate, key, CA): the collector then serves HTTPS."""
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.verify: str | bool = str(tls[2]) if tls else True
        self.admin_token = "admin-" + os.urandom(8).hex()
        self.enroll_secret = "enroll-" + os.urandom(8).hex()
        self.log = tmp_path / f"collector-{self.port}.log"
        self.env = {
            **os.environ,
            "FLEETWATCH_ADMIN_TOKEN": self.admin_token,
            "FLEETWATCH_ENROLL_SECRET": self.enroll_secret,
            "FLEETWATCH_DATABASE_URL": database_url,
            "FLEETWATCH_POLICY_CHECK_INTERVAL": "0.5",
            "FLEETWATCH_LOG_FORMAT": "json",
            **(
                {"FLEETWATCH_TLS_CERT": str(tls[0]), "FLEETWATCH_TLS_KEY": str(tls[1])}
                if tls
                else {}
            ),
            **(extra_env or {}),
        }
        self.args = [
            str(BIN / "fleetwatch"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        if policy is not None:
            self.args += ["--policy", str(policy)]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> CollectorProcess:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                msg = f"collector exited: {self.log.read_text()[-2000:]}"
                raise RuntimeError(msg)
            try:
                if requests.get(self.url + "/healthz", timeout=1, verify=self.verify).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop(kill=True)  # a collector that never answered must not outlive the test
        msg = f"collector did not start: {self.log.read_text()[-2000:]}"
        self.stop()  # not left running behind the failed test
        raise RuntimeError(msg)

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def api(self, path: str, **params: Any) -> Any:
        response = requests.get(
            self.url + path,
            params=params,
            timeout=10,
            verify=self.verify,
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )
        response.raise_for_status()
        return response.json()

    def agent_env(self, state_dir: Path, host_id: str, **settings: str) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("FLEETWATCH_")}
        env.update(
            {
                "FLEETWATCH_COLLECTOR_URL": self.url,
                "FLEETWATCH_ENROLL_SECRET": self.enroll_secret,
                "FLEETWATCH_STATE_DIR": str(state_dir),
                "FLEETWATCH_HOST_ID": host_id,
                "FLEETWATCH_LOG_FORMAT": "json",
            }
        )
        env.update({f"FLEETWATCH_{k.upper()}": v for k, v in settings.items()})
        return env


class AgentProcess:
    """The real `fleetwatch-agent run` in a subprocess, its log kept to read acknowledgements."""

    def __init__(
        self,
        collector: CollectorProcess,
        state_dir: Path,
        host_id: str,
        log: Path,
        prefix: list[str] | None = None,
        **settings: str,
    ) -> None:
        self.state_dir = state_dir
        self.log = log
        env = collector.agent_env(
            state_dir,
            host_id,
            **{"interval": "1", "jitter": "0", "retry_max_delay": "1", **settings},
        )
        self.env = env
        self.argv = [*(prefix or []), str(BIN / "fleetwatch-agent"), "run"]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=log)
        return self

    def stop(self) -> int:
        assert self.process is not None
        self.process.terminate()
        code = self.process.wait(timeout=60)
        self.process = None
        return code

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("event") == name:
                    found.append(event)
        return found

    def acknowledged(self) -> set[int]:
        """Sequences the collector acknowledged, as the agent logged them."""
        return {e["sequence"] for e in self.events("report delivered")}

    def last_sequence(self) -> int:
        state = json.loads((self.state_dir / "state.json").read_text())
        return int(state["last_sequence"])

    def spooled(self) -> int:
        return len(self.spooled_sequences())

    def spooled_sequences(self) -> set[int]:
        """Sequences still waiting in the spool (made after the last delivery, say)."""
        return {int(p.name.split(".")[0]) for p in (self.state_dir / "spool").glob("*.json.gz")}


def wait_until(what: str, condition: Any, timeout: float = 60, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except (requests.RequestException, OSError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    msg = f"timed out waiting for {what}; last: {last!r}"
    raise AssertionError(msg)


def received(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Reports as `GET /hosts/{id}/reports` lists them (any order), one entry per sequence,
    oldest first: an entry that stands for the quiet reports after it (``through``) is spread
    out over them (they brought nothing new: no drops, no errors)."""
    spread = []
    for entry in sorted(reports, key=lambda r: r["sequence"]):
        spread.append(entry)
        spread.extend(
            {**entry, "sequence": n, "dropped": 0, "through": None}
            for n in range(entry["sequence"] + 1, (entry.get("through") or 0) + 1)
        )
    return spread
