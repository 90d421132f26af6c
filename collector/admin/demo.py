"""The quick start: a collector on SQLite on loopback, this machine's agent, the hosts table.

Everything lives in one directory (``.fleetwatch-demo`` by default): the database, the agent's
state, the policy and the generated secrets. Running it again reuses them, so the second run
shows the same host with its history.

Given vulnerability data (``--vulnerabilities PATH``: the Debian tracker's JSON, OSV records,
CISA's KEV), the demo imports it first and ends with the CVEs this machine carries, by source
package.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from fleetwatch.collector.admin import render
from fleetwatch.collector.admin.client import ApiClient
from fleetwatch.collector.admin.vulns import vulnerabilities_text
from fleetwatch.collector.storage.engine import make_engine, upgrade
from fleetwatch.collector.storage.store import Store
from fleetwatch.collector.vulns.data import KnownVulnerabilities
from fleetwatch.collector.vulns.model import DataFormatError

# the example policy ships with the collector package (collector/examples/)
EXAMPLE_POLICY = Path(__file__).resolve().parent.parent / "examples" / "policy.toml"
STARTUP_TIMEOUT = 60.0


def _bindable_port(port: int) -> int:
    """``port`` if nothing holds it on loopback (0: any free port); a clear error if taken."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            msg = f"port {port} on 127.0.0.1 is taken ({exc.strerror}); choose another with --port"
            raise RuntimeError(msg) from exc
        return int(sock.getsockname()[1])


def _secret(directory: Path, name: str) -> str:
    path = directory / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def _policy(directory: Path, host_id: str) -> Path:
    path = directory / "policy.toml"
    if not path.exists():
        text = EXAMPLE_POLICY.read_text()
        text += f'\n# This machine, as the demo found it.\n[hosts."{host_id}"]\nunit = "demo"\n'
        path.write_text(text)
    return path


def _wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            msg = f"the collector exited with status {process.returncode}"
            raise RuntimeError(msg)
        try:
            if requests.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    msg = f"the collector did not answer at {url} within {STARTUP_TIMEOUT:g} s"
    raise RuntimeError(msg)


def _import_vulnerabilities(directory: Path, path: Path) -> bool:
    """Import vulnerability data into the demo's database, before its collector starts."""
    engine = make_engine(f"sqlite:///{directory / 'fleetwatch.db'}")
    try:
        upgrade(engine)
        infos = KnownVulnerabilities(Store(engine)).import_path(path)
    except (DataFormatError, OSError) as exc:
        print(f"fleetwatch demo: vulnerability data not imported: {exc}", file=sys.stderr)
        return False
    finally:
        engine.dispose()
    for info in infos:
        counts = ", ".join(f"{v} {k}" for k, v in info.counts.items())
        print(f"imported vulnerability data {info.name}: {counts}")
    return True


def run_demo(
    directory: Path,
    *,
    keep: bool = False,
    port: int = 8470,
    vulnerabilities: Path | None = None,
) -> int:
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    if vulnerabilities is not None and not _import_vulnerabilities(directory, vulnerabilities):
        return 1
    host_id = socket.gethostname()
    admin_token = _secret(directory, "admin-token")
    try:
        port = _bindable_port(port)
    except RuntimeError as exc:
        print(f"fleetwatch demo: {exc}", file=sys.stderr)
        return 1
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "FLEETWATCH_ADMIN_TOKEN": admin_token,
        "FLEETWATCH_ENROLL_SECRET": _secret(directory, "enroll-secret"),
        "FLEETWATCH_COLLECTOR_URL": url,
        "FLEETWATCH_STATE_DIR": str(directory / "agent"),
        "FLEETWATCH_HOST_ID": host_id,
        "FLEETWATCH_INTERVAL": "60",
        "FLEETWATCH_LOG_FORMAT": "console",
    }
    bin_dir = Path(sys.executable).parent
    collector_log = (directory / "collector.log").open("ab")
    print(f"starting a collector on {url} (database {directory / 'fleetwatch.db'})")
    collector = subprocess.Popen(  # noqa: S603  (our own executables)
        [
            str(bin_dir / "fleetwatch"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(directory),
            "--policy",
            str(_policy(directory, host_id)),
        ],
        env=env,
        stdout=collector_log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_until_up(url, collector)
        print(
            f"running this machine's agent once (host id {host_id}); the first run asks "
            "apt for pending updates, which takes a few seconds"
        )
        agent = subprocess.run(  # noqa: S603
            [str(bin_dir / "fleetwatch-agent"), "run", "--once"],
            env=env,
            check=False,
        )
        if agent.returncode != 0:
            print("the agent could not deliver its report; see the lines above", file=sys.stderr)
            return 1
        client = ApiClient(url, admin_token)
        print()
        print(render.hosts_table(client.get("/api/v1/hosts")))
        print()
        findings = client.get("/api/v1/findings", open="true")
        print(render.findings_table(findings) if findings else "no open findings")
        if vulnerabilities is not None:
            print()
            print("vulnerabilities, by source package:")
            pages = client.pages("/api/v1/vulnerabilities", host_id=host_id)
            print(vulnerabilities_text([row for page in pages for row in page]))
        if keep:
            print(_next_steps(url, directory, bin_dir, host_id))
            _run_agent_until_interrupted(bin_dir, env)
        else:
            print(
                "\n(the collector has stopped; with --keep it stays up to explore, "
                "for instance with `fleetwatch host`)"
            )
    except RuntimeError as exc:
        print(f"fleetwatch demo: {exc}; see {directory / 'collector.log'}", file=sys.stderr)
        return 1
    finally:
        collector.terminate()
        try:
            collector.wait(timeout=15)
        except subprocess.TimeoutExpired:
            collector.kill()
        collector_log.close()
    return 0


def _next_steps(url: str, directory: Path, bin_dir: Path, host_id: str) -> str:
    """What to try while the demo keeps running: the command line, the API, the dashboard."""
    fleetwatch = bin_dir / "fleetwatch"
    return (
        "\nthe collector and the agent (every 60 s) keep running; Ctrl-C stops both.\n"
        "Meanwhile, in another terminal:\n"
        f"  export FLEETWATCH_API_URL={url}\n"
        f"  export FLEETWATCH_API_TOKEN=$(cat {directory / 'admin-token'})\n"
        f"  1. {fleetwatch} findings        (then: {fleetwatch} host {host_id})\n"
        f"  2. the API and its docs:  {url}/docs\n"
        f"  3. the dashboard:         {url}/"
    )


def _run_agent_until_interrupted(bin_dir: Path, env: dict[str, str]) -> None:
    agent = subprocess.Popen([str(bin_dir / "fleetwatch-agent"), "run"], env=env)  # noqa: S603
    try:
        agent.wait()
    except KeyboardInterrupt:
        agent.terminate()
        agent.wait(timeout=30)
