"""End to end on lab hosts, real tools only: pyinfra over SSH deploys the collector and the
agents from a wheelhouse; agents enroll and report over HTTPS; problems show and clear; a
second deploy changes nothing; a newer version arrives; the remove deploy leaves nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from fleetwatch import __version__
from tests.helpers import BIN
from tests.lab import Lab
from tests.tls import TestCA

pytestmark = [pytest.mark.lab, pytest.mark.slow]

ROOT = Path(__file__).parent.parent.parent
COLLECTOR = "collector-01.ops"
BUILT = ["collector-01.ops", "web-01.parks", "web-02.water", "db-01.water"]
NEVER_BUILT = "ghost-01.parks"
LISTENER = (
    "import socket, time; s = socket.socket(); "
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
    "s.bind(('{address}', {port})); s.listen(); time.sleep(3600)"
)


def write_inventory(directory: Path, lab: Lab, ca: TestCA, secrets: dict[str, str]) -> Path:
    """A fleet of two units and three roles on the lab hosts, plus one host never built."""
    collector_address = lab.host(COLLECTOR).address
    server = ca.issue("collector", ips=(collector_address,))
    group_data = directory / "group_data"
    group_data.mkdir(parents=True)
    hosts = {h.name: h.address for h in lab.hosts} | {NEVER_BUILT: "192.0.2.1"}
    (directory / "fleet.py").write_text(
        f"fleetwatch_collectors = [('{COLLECTOR}', {{'ssh_hostname': '{hosts[COLLECTOR]}'}})]\n"
        f"bastion = ['{COLLECTOR}']\n"
        f"web = [('web-01.parks', {{'ssh_hostname': '{hosts['web-01.parks']}'}}),\n"
        f"       ('web-02.water', {{'ssh_hostname': '{hosts['web-02.water']}'}}),\n"
        f"       ('{NEVER_BUILT}', {{'ssh_hostname': '{hosts[NEVER_BUILT]}'}})]\n"
        f"database = [('db-01.water', {{'ssh_hostname': '{hosts['db-01.water']}'}})]\n"
        f"parks = ['web-01.parks', '{NEVER_BUILT}']\n"
        "water = ['web-02.water', 'db-01.water']\n"
        f"ops = ['{COLLECTOR}']\n"
    )
    connection = "\n".join(f"{k} = {v!r}" for k, v in lab.inventory_data().items())
    (group_data / "all.py").write_text(f"""{connection}
fleetwatch_collector_url = "https://{collector_address}:8470"
fleetwatch_enroll_secret = {secrets["enroll"]!r}
fleetwatch_admin_token = {secrets["admin"]!r}
fleetwatch_ca_cert = {ca.cert.read_text()!r}
fleetwatch_interval = 3
fleetwatch_allowed_ports = ["tcp/22"]
fleetwatch_max_report_age = 120
""")
    (group_data / "web.py").write_text(
        'fleetwatch_allowed_ports = ["tcp/22", "tcp/80"]\n'
        'fleetwatch_checks = [{"name": "site", "type": "tcp", "host": "127.0.0.1", "port": 8080}]\n'
    )
    (group_data / "database.py").write_text('fleetwatch_allowed_ports = ["tcp/22", "tcp/5432"]\n')
    (group_data / "fleetwatch_collectors.py").write_text(
        'fleetwatch_allowed_ports = ["tcp/22", "tcp/8470"]\n'
        f"fleetwatch_tls_cert = {server.cert_pem!r}\nfleetwatch_tls_key = {server.key_pem!r}\n"
    )
    for unit in ("parks", "water", "ops"):
        (group_data / f"{unit}.py").write_text(f'fleetwatch_unit = "{unit}"\n')
    return directory / "fleet.py"


SECRETS: list[str] = []  # what must never appear in pyinfra's output


def pyinfra(inventory: Path, deploy: str, *args: str, cwd: Path = ROOT) -> dict[str, int]:
    """Run the real pyinfra command in ``cwd`` (``deploy`` is relative to it); its grand total
    of operations (changed, errors, unchanged).

    Every run is also checked for the secrets: they never appear in pyinfra's output.
    """
    done = subprocess.run(
        [str(BIN / "pyinfra"), "-y", str(inventory), deploy, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    output = done.stdout + done.stderr  # pyinfra logs to stderr when not on a terminal
    for secret in SECRETS:
        assert secret not in output, f"a secret appears in the output of {deploy}"
    total = re.search(r"Grand total\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)", output)
    assert total is not None, output[-2000:]
    counts = [0 if v == "-" else int(v) for v in total.groups()]
    return {
        "operations": counts[0],
        "changed": counts[1],
        "errors": counts[2],
        "unchanged": counts[3],
    }


class Api:
    def __init__(self, url: str, token: str, ca: Path) -> None:
        self.url = url
        self.ca = str(ca)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str, **params: Any) -> Any:
        response = self.session.get(self.url + path, params=params, timeout=10, verify=self.ca)
        response.raise_for_status()
        return response.json()

    def hosts(self) -> dict[str, Any]:
        return {h["host_id"]: h for h in self.get("/api/v1/hosts")}


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except requests.RequestException as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}; last: {last!r}")


def agent_processes(lab: Lab, name: str) -> list[str]:
    """Command lines of agent processes in a lab host's network namespace."""
    pids = subprocess.run(
        ["ip", "netns", "pids", lab.host(name).netns], capture_output=True, text=True, check=False
    ).stdout.split()
    found = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "fleetwatch-agent" in cmdline:
            found.append(cmdline)
    return found


def newer_source(directory: Path) -> tuple[Path, str]:
    """A copy of this source tree with a higher version: a rebuilt wheel."""
    version = f"{__version__}.post1"
    copy = directory / "newer-source"
    for part in ("fleetwatch", "agent", "collector", "deploy"):
        shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / part, copy / part)
    init = copy / "fleetwatch" / "__init__.py"
    init.write_text(init.read_text().replace(f'"{__version__}"', f'"{version}"'))
    return copy, version


def test_rollout_find_fix_upgrade_remove(make_lab: Any, tmp_path: Path) -> None:
    lab = make_lab(BUILT)
    ca = TestCA(tmp_path / "ca")
    secrets = {"enroll": os.urandom(16).hex(), "admin": os.urandom(16).hex()}
    inventory = write_inventory(tmp_path / "inventory", lab, ca, secrets)
    tls_key = (tmp_path / "ca" / "collector.key").read_text()
    SECRETS[:] = [secrets["enroll"], secrets["admin"], tls_key.splitlines()[1]]
    api = Api(f"https://{lab.host(COLLECTOR).address}:8470", secrets["admin"], ca.cert)
    limit = [arg for name in BUILT for arg in ("--limit", name)]

    # The conditions: web-01 serves its site; web-02 does not (its check fails);
    # db-01 listens on a port its role does not allow.
    lab.spawn("web-01.parks", ["python3", "-c", LISTENER.format(address="127.0.0.1", port=8080)])
    stray = lab.spawn(
        "db-01.water", ["python3", "-c", LISTENER.format(address="0.0.0.0", port=9999)]
    )

    # 1. deploy the collector, then the agents, from a wheelhouse, over SSH
    first = pyinfra(
        inventory, "deploy/recipes/install_collector.py", "--limit", "fleetwatch_collectors"
    )
    assert first["errors"] == 0
    assert pyinfra(inventory, "deploy/recipes/install_agent.py", *limit)["errors"] == 0

    # 2. the agents enroll and report, over HTTPS against the test CA
    def all_reported() -> dict[str, Any] | None:
        hosts = api.hosts()
        return hosts if all(hosts[h]["last_report_at"] for h in BUILT) else None

    hosts = wait_for("every built host to report", all_reported)

    # 3. exactly the two hosts with problems are noncompliant, and say why
    def expected_statuses() -> dict[str, Any] | None:
        hosts = api.hosts()
        wanted = {
            "collector-01.ops": "compliant",
            "web-01.parks": "compliant",
            "web-02.water": "noncompliant",
            "db-01.water": "noncompliant",
            NEVER_BUILT: "never_reported",
        }
        return hosts if {h: hosts[h]["status"] for h in wanted} == wanted else None

    hosts = wait_for("the expected statuses", expected_statuses)
    db_findings = api.get("/api/v1/findings", host_id="db-01.water", open="true")
    assert [(f["rule"], f["key"]) for f in db_findings] == [("allowed_ports", "tcp/9999")]
    assert "tcp/9999 is listening on 0.0.0.0" in db_findings[0]["detail"]
    web_findings = api.get("/api/v1/findings", host_id="web-02.water", open="true")
    assert [(f["rule"], f["key"]) for f in web_findings] == [("failing_checks", "site")]
    assert hosts["web-02.water"]["unit"] == "water"
    assert hosts["db-01.water"]["groups"] == ["database", "water"]
    assert sorted(h["host_id"] for h in api.get("/api/v1/hosts", unit="water")) == [
        "db-01.water",
        "web-02.water",
    ]
    cli = subprocess.run(
        [str(BIN / "fleetwatch"), "findings", "--unit", "water", "--open", "--json"],
        env={
            "FLEETWATCH_API_URL": api.url,
            "FLEETWATCH_API_TOKEN": secrets["admin"],
            "FLEETWATCH_CA_BUNDLE": str(ca.cert),
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        check=True,
    )
    assert sorted(f["key"] for f in json.loads(cli.stdout)) == ["site", "tcp/9999"]
    # the agent names the process behind every socket: it runs with just enough privilege
    ports = api.get("/api/v1/hosts/db-01.water")["sections"]["ports"]["data"]["listeners"]
    sshd = next(x for x in ports if x["port"] == 22)
    assert (sshd["process"], sshd["user"]) == ("sshd", "root")
    owner = lab.ssh("db-01.water", "ps -o user= -p $(cat /run/fleetwatch-agent.pid)").strip()
    assert owner == "fleetwatch"

    # 4. fixing them clears the findings on the next report
    stray.kill()
    stray.wait()
    lab.spawn("web-02.water", ["python3", "-c", LISTENER.format(address="127.0.0.1", port=8080)])

    def all_compliant() -> bool:
        hosts = api.hosts()
        return all(hosts[h]["status"] == "compliant" for h in BUILT)

    wait_for("every built host to be compliant", all_compliant)
    resolved = api.get("/api/v1/findings", open="false")
    assert sorted(f["key"] for f in resolved) == ["site", "tcp/9999"]
    assert all(f["resolved_at"] for f in resolved)

    # 4b. a changed baseline reaches the running collector without a restart
    collector_pid = lab.ssh(COLLECTOR, "cat /run/fleetwatch-collector.pid").strip()
    lab.spawn("db-01.water", ["python3", "-c", LISTENER.format(address="0.0.0.0", port=9999)])
    wait_for(
        "the stray listener to be flagged again",
        lambda: api.hosts()["db-01.water"]["status"] == "noncompliant",
    )
    (inventory.parent / "group_data" / "database.py").write_text(
        'fleetwatch_allowed_ports = ["tcp/22", "tcp/5432", "tcp/9999"]\n'
    )
    policy_change = pyinfra(
        inventory, "deploy/recipes/install_collector.py", "--limit", "fleetwatch_collectors"
    )
    assert policy_change["changed"] == 1  # the policy file, and nothing else
    wait_for(
        "the new baseline to clear db-01",
        lambda: api.hosts()["db-01.water"]["status"] == "compliant",
        timeout=60,
    )
    assert lab.ssh(COLLECTOR, "cat /run/fleetwatch-collector.pid").strip() == collector_pid

    # 5. a second run of the agent deploy changes nothing (and with --diff, which shows the
    # contents of changed files, still no secret shows)
    again = pyinfra(inventory, "deploy/recipes/install_agent.py", *limit, "--diff")
    assert again["changed"] == 0, again
    assert again["errors"] == 0

    # secrets are readable by their service only
    modes = lab.ssh(
        "web-01.parks",
        "stat -c '%a %U:%G %n' /etc/fleetwatch/enroll-secret "
        "/etc/fleetwatch/agent.toml /var/lib/fleetwatch-agent/token",
    )
    assert modes.split("\n")[:3] == [
        "640 root:fleetwatch /etc/fleetwatch/enroll-secret",
        "640 root:fleetwatch /etc/fleetwatch/agent.toml",
        "600 fleetwatch:fleetwatch /var/lib/fleetwatch-agent/token",
    ]

    # 6. a newer agent version arrives, restarts the agents, and the collector sees it
    source, version = newer_source(tmp_path)
    upgrade = pyinfra(
        inventory,
        "deploy/recipes/install_agent.py",
        *limit,
        "--data",
        f"fleetwatch_source={source}",
    )
    assert upgrade["errors"] == 0
    wait_for(
        f"every agent to report version {version}",
        lambda: all(api.hosts()[h]["agent_version"] == version for h in BUILT),
    )

    # 7. the remove deploy leaves no agent process and none of its files
    assert pyinfra(inventory, "deploy/recipes/remove_agent.py", *limit)["errors"] == 0
    for name in BUILT:
        assert agent_processes(lab, name) == [], name
        left = lab.ssh(
            name,
            "for p in /opt/fleetwatch/agent /opt/fleetwatch/wheelhouse/agent "
            "/etc/fleetwatch /var/lib/fleetwatch-agent "
            "/var/log/fleetwatch-agent /run/fleetwatch-agent.pid; "
            "do test -e $p && echo $p; done; id fleetwatch 2>/dev/null; true",
        )
        assert left.strip() == "", f"{name} keeps {left}"
    # the collector itself still runs on its host
    assert api.get("/healthz")["status"] == "ok"
