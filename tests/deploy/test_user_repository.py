"""fleetwatch's deploys called from an ops team's own pyinfra repository: one with its own
``deploy.py``, ``inventory.py`` and ``group_data/`` at its top, names a bare ``deploy``
package of ours would have collided with.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_rollout import SECRETS, Api, pyinfra, wait_for
from tests.tls import TestCA

HOST = "app-01.ops"
NEVER_BUILT = "ghost-01.ops"  # in the team's inventory, not in its app group, never deployed

# The team's deploy: an operation of its own, then fleetwatch's, as docs/deploy.md shows.
USER_DEPLOY = '''\
"""The ops team's deploy: its own directory, the collector on its host, an agent everywhere."""

from pyinfra import host
from pyinfra.operations import files

from fleetwatch.deploy import install_agent, install_collector

files.directory(name="Create the team's own directory", path="/etc/ops-team")
if "fleetwatch_collectors" in host.groups:
    install_collector()
install_agent()
'''


def user_repository(directory: Path, *, deploy: str, group_data: str, inventory: str) -> Path:
    """A pyinfra repository of the team's own: deploy.py, inventory.py, group_data/all.py."""
    (directory / "group_data").mkdir(parents=True)
    (directory / "deploy.py").write_text(deploy)
    (directory / "inventory.py").write_text(inventory)
    (directory / "group_data" / "all.py").write_text(group_data)
    return directory


# Imports the user's modules first, then fleetwatch's deploys (each one, as the lazy names
# load them): code of ours importing a bare `deploy` would now get the user's file, and fail.
IMPORT_PROBE = """
import sys
import deploy, inventory
from fleetwatch.deploy import install_agent, install_collector, remove_agent
assert deploy.OURS and inventory.OURS
for function in (install_agent, install_collector, remove_agent):
    assert function.__module__.startswith("fleetwatch.deploy.deploys."), function.__module__
print(deploy.__file__)
print(sys.modules["fleetwatch.deploy"].__file__)
"""


class TestImport:
    def test_fleetwatch_deploys_import_beside_a_deploy_module_of_the_users(
        self, tmp_path: Path
    ) -> None:
        """With the user's deploy.py and group_data/ first on sys.path, both import, apart."""
        repo = user_repository(
            tmp_path / "ops-repo",
            # the real one runs pyinfra operations when imported: here only its name matters
            deploy='"""The ops team\'s deploy."""\nOURS = True\n',
            group_data='fleetwatch_collector_url = "https://fw.example:8470"\n',
            inventory=f"fleetwatch_collectors = ['{HOST}']\nOURS = True\n",
        )
        # `python -c` puts its working directory first on sys.path, as pyinfra does
        done = subprocess.run(
            [sys.executable, "-c", IMPORT_PROBE],
            cwd=repo,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        users, ours = done.stdout.split()
        assert Path(users) == repo / "deploy.py"
        assert Path(ours).parent.name == "deploy"
        assert Path(ours).parent.parent.name == "fleetwatch"


@pytest.mark.root
@pytest.mark.lab
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_users_own_deploy_installs_collector_and_agent_on_a_lab_host(
    make_lab: Any, tmp_path: Path
) -> None:
    """The real pyinfra command, run in the team's repository, deploys fleetwatch over SSH:
    the team's own operation runs, the collector gets the policy compiled from the team's
    group data, and the agent enrolls and reports."""
    lab = make_lab([HOST])
    address = lab.host(HOST).address
    ca = TestCA(tmp_path / "ca")
    # the agent reports over loopback, the test asks from outside: both names verify
    server = ca.issue("collector", ips=("127.0.0.1", address))
    secrets = {"enroll": os.urandom(16).hex(), "admin": os.urandom(16).hex()}
    SECRETS[:] = [secrets["enroll"], secrets["admin"], server.key_pem.splitlines()[1]]
    connection = "\n".join(f"{k} = {v!r}" for k, v in lab.inventory_data().items())
    repo = user_repository(
        tmp_path / "ops-repo",
        deploy=USER_DEPLOY,
        group_data=f"""{connection}
fleetwatch_collector_url = "https://127.0.0.1:8470"
fleetwatch_enroll_secret = {secrets["enroll"]!r}
fleetwatch_admin_token = {secrets["admin"]!r}
fleetwatch_ca_cert = {ca.cert.read_text()!r}
fleetwatch_tls_cert = {server.cert_pem!r}
fleetwatch_tls_key = {server.key_pem!r}
fleetwatch_interval = 3
fleetwatch_unit = "ops"
fleetwatch_allowed_ports = ["tcp/22", "tcp/8470"]
""",
        inventory=(
            f"fleetwatch_collectors = [('{HOST}', {{'ssh_hostname': '{address}'}})]\n"
            f"app = ['{HOST}']\n"
            f"spare = [('{NEVER_BUILT}', {{'ssh_hostname': '192.0.2.1'}})]\n"
        ),
    )

    done = pyinfra(repo / "inventory.py", "deploy.py", "--limit", HOST, cwd=repo)
    assert done["errors"] == 0, done
    assert done["changed"] > 0, done

    assert lab.ssh(HOST, "test -d /etc/ops-team && echo yes").strip() == "yes"
    config = lab.ssh(HOST, "cat /etc/fleetwatch/agent.toml")
    assert f'host_id = "{HOST}"' in config.splitlines()
    api = Api(f"https://{address}:8470", secrets["admin"], ca.cert)

    def reported() -> dict[str, Any] | None:
        hosts = api.hosts()
        return hosts if hosts.get(HOST, {}).get("last_report_at") else None

    hosts = wait_for("the agent to report", reported)
    assert hosts[HOST]["unit"] == "ops"  # the policy came from the team's group data
    assert hosts[HOST]["groups"] == ["app"]
    assert hosts[NEVER_BUILT]["status"] == "never_reported"
