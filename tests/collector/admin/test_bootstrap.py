"""`fleetwatch bootstrap DIR`: a new fleet's CA, collector certificate and secrets, with safe
modes, never over an existing fleet; a real collector serves HTTPS with them and a real agent
enrolls with them."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from fleetwatch.collector.admin.bootstrap import SECRET_FILES
from tests.helpers import CollectorProcess

BIN = Path(sys.executable).parent
FILES = {"ca.crt", "ca.key", "collector.crt", "collector.key", "enroll-secret", "admin-token"}


def bootstrap(directory: Path, *args: str, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    previous = os.umask(umask)
    try:
        return subprocess.run(
            [str(BIN / "fleetwatch"), "bootstrap", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def verify(directory: Path, name: x509.GeneralName) -> None:
    """Raises unless collector.crt chains to ca.crt as a server certificate for ``name``."""
    ca = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
    leaf = x509.load_pem_x509_certificate((directory / "collector.crt").read_bytes())
    verifier = PolicyBuilder().store(Store([ca])).build_server_verifier(name)
    verifier.verify(leaf, [])


class TestFiles:
    @pytest.mark.parametrize("umask", [0o022, 0o000, 0o077])
    def test_modes_are_safe_whatever_the_umask(self, tmp_path: Path, umask: int) -> None:
        """The directory is 0700, keys and secrets 0600, certificates 0644."""
        fleet = tmp_path / "fleet"
        done = bootstrap(fleet, "--name", "fleetwatch.example.org", umask=umask)
        assert done.returncode == 0, done.stderr
        assert mode(fleet) == 0o700
        assert {p.name for p in fleet.iterdir()} == FILES
        for name in FILES:
            expected = 0o600 if name in SECRET_FILES else 0o644
            assert mode(fleet / name) == expected, f"{name}: {oct(mode(fleet / name))}"

    def test_the_certificate_names_every_name_and_address(self, tmp_path: Path) -> None:
        """collector.crt verifies against ca.crt for each --name and --address, not others."""
        import ipaddress

        fleet = tmp_path / "fleet"
        done = bootstrap(
            fleet,
            "--name",
            "fleetwatch-01.ops.example.org",
            "--name",
            "fleetwatch.example.org",
            "--address",
            "10.0.0.5",
        )
        assert done.returncode == 0, done.stderr
        verify(fleet, x509.DNSName("fleetwatch-01.ops.example.org"))
        verify(fleet, x509.DNSName("fleetwatch.example.org"))
        verify(fleet, x509.IPAddress(ipaddress.ip_address("10.0.0.5")))
        with pytest.raises(x509.verification.VerificationError):
            verify(fleet, x509.DNSName("other.example.org"))

    def test_secrets_differ_and_are_long(self, tmp_path: Path) -> None:
        """The enrollment secret and the admin token are distinct random strings."""
        fleet = tmp_path / "fleet"
        assert bootstrap(fleet, "--address", "10.0.0.5").returncode == 0
        enroll = (fleet / "enroll-secret").read_text().strip()
        admin = (fleet / "admin-token").read_text().strip()
        assert enroll != admin
        assert min(len(enroll), len(admin)) >= 40


class TestRefusals:
    def test_an_existing_fleet_is_never_overwritten(self, tmp_path: Path) -> None:
        """A second bootstrap into the same directory fails and changes nothing."""
        fleet = tmp_path / "fleet"
        assert bootstrap(fleet, "--name", "a.example.org").returncode == 0
        before = {p.name: p.read_bytes() for p in fleet.iterdir()}
        again = bootstrap(fleet, "--name", "a.example.org")
        assert again.returncode == 2
        assert "is not empty" in again.stderr
        assert "never overwrites" in again.stderr
        assert {p.name: p.read_bytes() for p in fleet.iterdir()} == before

    def test_an_empty_directory_is_used(self, tmp_path: Path) -> None:
        """An empty directory made beforehand (a mount point, say) is filled and made 0700."""
        fleet = tmp_path / "fleet"
        fleet.mkdir(mode=0o755)
        assert bootstrap(fleet, "--name", "a.example.org").returncode == 0
        assert mode(fleet) == 0o700
        assert {p.name for p in fleet.iterdir()} == FILES

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            ([], "give the collector's names (--name) or addresses (--address)"),
            (["--name", "10.0.0.5 x"], "--name '10.0.0.5 x' is not a DNS name"),
            (["--address", "fleet.example.org"], "is not an IP address (a name goes with --name)"),
            (["--name", "a.example.org", "--days", "0"], "--days must be between 1 and"),
        ],
    )
    def test_bad_input_is_named_and_nothing_is_left(
        self, tmp_path: Path, args: list[str], message: str
    ) -> None:
        """A wrong name, address or lifetime is refused with its reason; no files are left."""
        done = bootstrap(tmp_path / "fleet", *args)
        assert done.returncode == 2
        assert message in done.stderr
        assert list(tmp_path.iterdir()) == []


@pytest.fixture
def fleet_collector(tmp_path: Path) -> Iterator[tuple[CollectorProcess, Path]]:
    """A real collector serving HTTPS with the bootstrapped certificate and secrets."""
    fleet = tmp_path / "fleet"
    assert bootstrap(fleet, "--name", "localhost", "--address", "127.0.0.1").returncode == 0
    collector = CollectorProcess(
        tmp_path,
        f"sqlite:///{tmp_path / 'fleetwatch.db'}",
        tls=(fleet / "collector.crt", fleet / "collector.key", fleet / "ca.crt"),
        extra_env={
            "FLEETWATCH_ADMIN_TOKEN_FILE": str(fleet / "admin-token"),
            "FLEETWATCH_ENROLL_SECRET_FILE": str(fleet / "enroll-secret"),
        },
    )
    for name in ("FLEETWATCH_ADMIN_TOKEN", "FLEETWATCH_ENROLL_SECRET"):
        del collector.env[name]  # the helper's own: the collector reads the files instead
    collector.admin_token = (fleet / "admin-token").read_text().strip()
    collector.enroll_secret = (fleet / "enroll-secret").read_text().strip()
    collector.start()
    try:
        yield collector, fleet
    finally:
        collector.stop()


def test_a_collector_and_an_agent_work_with_what_bootstrap_made(
    fleet_collector: tuple[CollectorProcess, Path], tmp_path: Path
) -> None:
    """HTTPS verified against ca.crt, the admin token accepted, the real agent enrolled."""
    collector, fleet = fleet_collector
    assert requests.get(collector.url + "/healthz", timeout=10, verify=str(fleet / "ca.crt")).ok
    with pytest.raises(requests.exceptions.SSLError):  # not trusted without the fleet's CA
        requests.get(collector.url + "/healthz", timeout=10)
    done = subprocess.run(
        [str(BIN / "fleetwatch-agent"), "run", "--once"],
        env={
            **collector.agent_env(tmp_path / "agent", "boot-01"),
            "FLEETWATCH_CA_BUNDLE": str(fleet / "ca.crt"),
        },
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    hosts = {h["host_id"]: h for h in collector.api("/api/v1/hosts")}
    assert hosts["boot-01"]["last_report_at"] is not None
