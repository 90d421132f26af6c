"""Each collector, fed sources captured from real hosts."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import namedtuple
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest

from fleetwatch.agent.collectors.checks import (
    ChecksCollector,
    HttpCheck,
    ProcessCheck,
    TcpCheck,
    run_http,
    run_process,
    run_tcp,
)
from fleetwatch.agent.collectors.packages import InstalledPackages, PackagesCollector
from fleetwatch.agent.collectors.ports import (
    EphemeralPorts,
    PortsCollector,
    ephemeral_ports,
    socket_owners,
)
from fleetwatch.agent.collectors.resources import ResourcesCollector
from fleetwatch.agent.collectors.services import (
    ServicesCollector,
    parse_list_unit_files,
    parse_list_units,
)
from fleetwatch.agent.collectors.system import SystemCollector, parse_os_release
from fleetwatch.agent.collectors.updates import UpdatesCollector
from fleetwatch.agent.package_managers.dpkg import Dpkg
from tests.helpers import FIXTURES

SYSTEMD = FIXTURES / "systemd"


def _system(
    tmp_path: Path, *, kernel: str, reboot: bool, status: str = "status-kernels"
) -> SystemCollector:
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    if reboot:
        for name in ("reboot-required", "reboot-required.pkgs"):
            shutil.copy(FIXTURES / "reboot" / name, run_dir / name)
    installed = InstalledPackages(Dpkg(status_path=FIXTURES / "dpkg" / status))
    return SystemCollector(
        installed,
        os_release=FIXTURES / "os-release" / "debian-12",
        machine_id=tmp_path / "machine-id",
        reboot_required=run_dir / "reboot-required",
        hostname=lambda: "web-01",
        kernel=lambda: kernel,
        architecture=lambda: "x86_64",
        boot_time=lambda: 1_700_000_000.7,
    )


class TestSystem:
    def test_identity_and_os(self, tmp_path: Path) -> None:
        """Hostname, OS id/version/codename, kernel, architecture and boot time are reported."""
        (tmp_path / "machine-id").write_text("3d1219c7c4c5404aaa1f6d2a48adfda4\n")
        data = _system(tmp_path, kernel="6.1.0-56-amd64", reboot=False).collect()
        assert data.hostname == "web-01"
        assert data.machine_id == "3d1219c7c4c5404aaa1f6d2a48adfda4"
        assert (data.os.id, data.os.version_id, data.os.codename) == ("debian", "12", "bookworm")
        assert data.os.pretty_name == "Debian GNU/Linux 12 (bookworm)"
        assert data.kernel == "6.1.0-56-amd64"
        assert data.boot_time.timestamp() == 1_700_000_000  # whole seconds, stable

    def test_reboot_required_file_and_its_packages(self, tmp_path: Path) -> None:
        """The reboot-required flag file and the packages that asked for it are reported."""
        data = _system(tmp_path, kernel="6.1.0-56-amd64", reboot=True).collect()
        assert data.reboot_required
        assert data.reboot_required_packages == ["linux-image-6.1.0-56-amd64"]
        assert data.reboot_required_since is not None

    def test_no_reboot_required(self, tmp_path: Path) -> None:
        """Without the flag file no reboot is required."""
        data = _system(tmp_path, kernel="6.1.0-56-amd64", reboot=False).collect()
        assert not data.reboot_required
        assert data.reboot_required_since is None

    def test_running_an_older_kernel_than_installed(self, tmp_path: Path) -> None:
        """Running 6.1.0-54 with 6.1.0-56 installed means the kernel is outdated."""
        data = _system(tmp_path, kernel="6.1.0-54-amd64", reboot=False).collect()
        assert data.kernel_latest_installed == "6.1.0-56-amd64"
        assert data.kernel_outdated is True

    def test_running_the_newest_kernel(self, tmp_path: Path) -> None:
        data = _system(tmp_path, kernel="6.1.0-56-amd64", reboot=False).collect()
        assert data.kernel_outdated is False

    def test_kernel_not_from_a_package_is_unknown(self, tmp_path: Path) -> None:
        """A kernel that no installed package provides (a VM's or container host's) is unknown."""
        data = _system(tmp_path, kernel="6.18.44-fc-v857", reboot=False).collect()
        assert data.kernel_outdated is None

    def test_os_release_quoting(self) -> None:
        """Quoted and unquoted values and comments are read as the shell would."""
        release = parse_os_release(
            "# comment\nID=ubuntu\nVERSION_ID=\"22.04\"\nPRETTY_NAME='Ubuntu 22.04.4 LTS'\n"
        )
        assert (release.id, release.version_id, release.pretty_name) == (
            "ubuntu",
            "22.04",
            "Ubuntu 22.04.4 LTS",
        )


class TestPackages:
    def test_reads_the_database_again_only_when_it_changed(self, tmp_path: Path) -> None:
        """The status file is parsed once until its size, inode or mtime changes."""
        status = tmp_path / "status"
        shutil.copy(FIXTURES / "dpkg" / "status", status)

        class Counting(Dpkg):
            reads = 0

            def installed_packages(self) -> Any:
                Counting.reads += 1
                return super().installed_packages()

        collector = PackagesCollector(InstalledPackages(Counting(status_path=status)))
        first = collector.collect()
        assert collector.collect() is first
        assert Counting.reads == 1
        with status.open("a") as f:
            f.write(
                "\nPackage: extra\nStatus: install ok installed\nVersion: 1.0\nArchitecture: all\n"
            )
        assert len(collector.collect().packages) == len(first.packages) + 1
        assert Counting.reads == 2


class TestUpdatesCache:
    def test_apt_runs_again_only_when_its_inputs_changed(self, tmp_path: Path) -> None:
        """The expensive apt simulation is reused while the fingerprint stays the same."""
        calls = []

        def apt(argv: Sequence[str], timeout: float) -> str:
            if argv[0] != "apt-get":
                return "amd64\n" if argv[0] == "dpkg" else ""  # apt's policy: nothing to add
            calls.append(argv)
            return (FIXTURES / "apt" / "dist-upgrade-security.txt").read_text()

        status = tmp_path / "status"
        shutil.copy(FIXTURES / "dpkg" / "status", status)
        manager = Dpkg(
            status_path=status,
            lists_dir=tmp_path / "lists",
            apt_config_dir=tmp_path / "etc",
            run=apt,
        )
        cache = tmp_path / "cache" / "updates.json"
        collector = UpdatesCollector(manager, cache)
        first = collector.collect()
        collector.collect()
        assert len(calls) == 1
        # a restarted agent reads the cache from its state directory
        assert UpdatesCollector(manager, cache).collect() == first
        assert len(calls) == 1
        time.sleep(0.01)
        status.write_text(status.read_text() + "\n")
        collector.collect()
        assert len(calls) == 2

    def test_corrupt_cache_is_ignored(self, tmp_path: Path) -> None:
        """A damaged cache file means asking apt again, not failing."""
        cache = tmp_path / "updates.json"
        cache.write_text("{not json")
        manager = Dpkg(
            status_path=FIXTURES / "dpkg" / "status",
            lists_dir=tmp_path,
            apt_config_dir=tmp_path,
            run=lambda argv, timeout: (
                FIXTURES / "apt" / "dist-upgrade-up-to-date.txt"
            ).read_text(),
        )
        assert UpdatesCollector(manager, cache).collect().updates == []


class TestServices:
    def _runner(self) -> Any:
        outputs = {
            "list-units": (SYSTEMD / "list-units.txt").read_text(),
            "list-unit-files": (SYSTEMD / "list-unit-files.txt").read_text(),
        }
        return lambda argv, timeout: outputs[argv[1]]

    def test_units_with_states_and_enablement(self, tmp_path: Path) -> None:
        """Loaded units carry load/active/sub state and their unit-file state."""
        (tmp_path / "system").mkdir()
        data = ServicesCollector(self._runner(), tmp_path / "system").collect()
        assert data.available
        assert data.manager == "systemd"
        units = {u.name: u for u in data.units}
        dbus = units["dbus.service"]
        assert (dbus.load, dbus.active, dbus.sub, dbus.enabled) == (
            "loaded",
            "active",
            "running",
            "static",
        )
        redis = units["redis-server.service"]
        assert (redis.active, redis.sub) == ("failed", "failed")
        assert units["mariadb.service"].enabled == "enabled"
        assert units["getty@tty1.service"].enabled == "enabled"  # through its template
        assert units["auditd.service"].load == "not-found"
        assert "getty@.service" not in units  # a template cannot run
        assert "mysql.service" not in units  # an alias is listed under its target's name

    def test_unit_files_not_loaded_are_inactive(self, tmp_path: Path) -> None:
        """An installed but never loaded unit is reported as inactive with its file state."""
        (tmp_path / "system").mkdir()
        units = {
            u.name: u
            for u in ServicesCollector(self._runner(), tmp_path / "system").collect().units
        }
        debug_shell = units["debug-shell.service"]
        assert (debug_shell.active, debug_shell.enabled, debug_shell.load) == (
            "inactive",
            "disabled",
            None,
        )

    def test_host_without_systemd_says_so(self, tmp_path: Path) -> None:
        """Without systemd as init the section says why, and lists no invented units."""

        def never(argv: Sequence[str], timeout: float) -> str:
            raise AssertionError("systemctl must not be called")

        data = ServicesCollector(never, tmp_path / "absent").collect()
        assert not data.available
        assert data.units == []
        assert "systemd is not the init system" in (data.reason or "")

    def test_parses_output_with_bullets_and_legend(self) -> None:
        """The decorated output (bullets before failed units, a legend) parses the same."""
        plain = parse_list_units((SYSTEMD / "list-units.txt").read_text())
        pretty = parse_list_units((SYSTEMD / "list-units-bullets.txt").read_text())
        assert set(plain) <= set(pretty) | {n for n in plain if n not in pretty}
        assert pretty["mosquitto.service"] == ("loaded", "failed", "failed")

    def test_unit_file_states(self) -> None:
        files = parse_list_unit_files((SYSTEMD / "list-unit-files.txt").read_text())
        assert files["hwclock.service"] == "masked"
        assert files["console-getty.service"] == "enabled-runtime"


Conn = namedtuple("Conn", "fd family type laddr raddr status pid")
Addr = namedtuple("Addr", "ip port")


def _captured_connections() -> tuple[list[Conn], dict[int, tuple[str, str]]]:
    capture = json.loads((FIXTURES / "psutil" / "net_connections.json").read_text())
    conns = [
        Conn(
            c["fd"],
            socket.AddressFamily(c["family"]),
            socket.SocketKind(c["type"]),
            Addr(*c["laddr"]) if c["laddr"] else (),
            Addr(*c["raddr"]) if c["raddr"] else (),
            c["status"],
            c["pid"],
        )
        for c in capture["connections"]
    ]
    processes = {int(pid): (name, user) for pid, (name, user) in capture["processes"].items()}
    return conns, processes


class TestPorts:
    def test_listeners_from_a_captured_host(self) -> None:
        """Listening TCP and bound UDP sockets are reported; connections are not."""
        conns, processes = _captured_connections()
        data = PortsCollector(
            net_connections=lambda kind: conns,
            process=lambda pid: processes.get(pid, (None, None)),
        ).collect()
        found = {(x.protocol, x.address, x.port) for x in data.listeners}
        assert ("tcp", "::", 18080) in found
        assert ("udp", "0.0.0.0", 15353) in found
        assert ("tcp", "127.0.0.1", 5432) in found
        assert ("tcp", "::1", 6379) in found  # loopback and wildcard stay distinct
        assert all(x.port != 50068 for x in data.listeners)  # a client connection's port
        postgres = next(x for x in data.listeners if x.port == 5432)
        assert (postgres.process, postgres.user) == ("postgres", "postgres")

    def test_a_real_listener_on_this_host(self) -> None:
        """With real psutil, a socket this test opens is found with this process behind it."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("0.0.0.0", 0))
            sock.listen()
            port = sock.getsockname()[1]
            data = PortsCollector().collect()
        mine = [x for x in data.listeners if x.port == port and x.protocol == "tcp"]
        assert len(mine) == 1
        assert mine[0].address == "0.0.0.0"
        assert mine[0].pid == os.getpid()

    def test_autobound_udp_client_is_not_a_listener(self) -> None:
        """A UDP socket that only sent (the kernel gave it an ephemeral port) is left out."""
        ephemeral = ephemeral_ports()
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server,
        ):
            client.sendto(b"ping", ("127.0.0.1", 9))  # discard: nobody needs to answer
            client_port = client.getsockname()[1]
            server_port = _bind_below(server, ephemeral.low)
            data = PortsCollector().collect()
        assert ephemeral.autobound(client_port)
        udp = {x.port: x for x in data.listeners if x.protocol == "udp"}
        assert client_port not in udp
        assert udp[server_port].pid == os.getpid()
        assert udp[server_port].user is not None

    def test_tcp_client_connection_is_not_a_listener(self) -> None:
        """Both ends of an established TCP connection stay out; the listener is in."""
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            with socket.create_connection(server.getsockname()) as client:
                accepted, _ = server.accept()
                with accepted:
                    data = PortsCollector().collect()
                    client_port = client.getsockname()[1]
            tcp = {x.port for x in data.listeners if x.protocol == "tcp"}
            assert server.getsockname()[1] in tcp
        assert client_port not in tcp

    def test_reserved_port_in_the_ephemeral_range_is_a_listener(self) -> None:
        """A UDP port the kernel keeps out of autobind (reserved) is a service's: reported."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
            server.bind(("0.0.0.0", 0))
            port = server.getsockname()[1]
            unreserved = EphemeralPorts(port - 1, port + 1)
            reserved = EphemeralPorts(port - 1, port + 1, frozenset({port}))
            ranges = (unreserved, reserved)
            found = [
                any(
                    x.port == port
                    for x in PortsCollector(ephemeral=lambda r=r: r).collect().listeners
                )
                for r in ranges
            ]
        assert found == [False, True]

    def test_ephemeral_ports_from_sysctl_files(self, tmp_path: Path) -> None:
        """The port range and reserved ports are read as the kernel writes them."""
        (tmp_path / "ip_local_port_range").write_text("32768\t60999\n")
        (tmp_path / "ip_local_reserved_ports").write_text("40000-40002,51820\n")
        ports = ephemeral_ports(tmp_path)
        assert ports.autobound(32768)
        assert not ports.autobound(40001)
        assert not ports.autobound(51820)
        assert not ports.autobound(1024)
        assert not ephemeral_ports(tmp_path / "absent").autobound(40000)


def _bind_below(sock: socket.socket, limit: int) -> int:
    """Bind ``sock`` to a free port below ``limit``, explicitly, as a service does."""
    for port in range(limit - 1, 1024, -97):
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            continue
        return port
    pytest.skip(f"no free UDP port below {limit}")


@pytest.fixture
def http_server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 503 if self.path == "/down" else 200
            self.send_response(status)
            self.end_headers()
            if self.path == "/slow":
                time.sleep(2)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class TestChecks:
    def test_tcp_check_against_a_real_socket(self) -> None:
        """A TCP check passes while something listens and fails with the reason once it stops."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen()
            port = sock.getsockname()[1]
            passing = run_tcp(TcpCheck(type="tcp", name="db", port=port))
        failing = run_tcp(TcpCheck(type="tcp", name="db", port=port))
        assert passing.ok
        assert passing.latency_ms is not None
        assert not failing.ok
        assert "refused" in (failing.reason or "").lower()

    def test_http_check_status_and_latency(self, http_server: str) -> None:
        """An HTTP check passes on 2xx/3xx, fails on 503, and fails on a timeout."""
        ok = run_http(HttpCheck(type="http", name="web", url=http_server + "/"))
        assert ok.ok
        assert ok.status_code == 200
        down = run_http(HttpCheck(type="http", name="web", url=http_server + "/down"))
        assert not down.ok
        assert down.reason == "HTTP status 503"
        allowed = run_http(
            HttpCheck(type="http", name="web", url=http_server + "/down", expect_status=[503])
        )
        assert allowed.ok

    def test_http_check_timeout(self) -> None:
        """A server that never answers fails the check within its timeout."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen()  # accepts connections, never answers
            port = sock.getsockname()[1]
            started = time.monotonic()
            result = run_http(
                HttpCheck(type="http", name="web", url=f"http://127.0.0.1:{port}/", timeout=0.5)
            )
        assert not result.ok
        assert "0.5 s" in (result.reason or "")
        assert time.monotonic() - started < 5

    def test_process_check_with_a_real_process(self) -> None:
        """A process check finds a running process by name, and says when it is absent."""
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            name = Path(sys.executable).name
            assert run_process(ProcessCheck(type="process", name="py", process=name)).ok
        finally:
            child.kill()
            child.wait()
        missing = run_process(ProcessCheck(type="process", name="x", process="no-such-daemon"))
        assert not missing.ok
        assert "no-such-daemon" in (missing.reason or "")

    def test_a_broken_check_does_not_hide_the_others(self) -> None:
        """An exception in one check is that check's failure; the rest still run."""

        def run(check: Any) -> Any:
            if check.name == "bad":
                raise RuntimeError("boom")
            return run_process(check)

        checks = [
            ProcessCheck(type="process", name="bad", process="x"),
            ProcessCheck(type="process", name="good", process=psutil.Process().name()),
        ]
        data = ChecksCollector(checks, run).collect()
        results = {r.name: r for r in data.results}
        assert not results["bad"].ok
        assert "boom" in (results["bad"].reason or "")
        assert results["good"].ok


class TestResources:
    def test_skips_read_only_images(self) -> None:
        """squashfs mounts (always 100% full) are not reported; real mounts are."""
        Part = namedtuple("Part", "device mountpoint fstype opts")
        Usage = namedtuple("Usage", "total used free percent")
        Memory = namedtuple("Memory", "total available percent")
        data = ResourcesCollector(
            partitions=lambda all: [
                Part("/dev/vda", "/", "ext4", "rw"),
                Part("/dev/loop0", "/snap/core/1", "squashfs", "ro"),
            ],
            usage=lambda path: Usage(100, 93, 7, 93.0),
            memory=lambda: Memory(1000, 400, 60.0),
            load=lambda: (0.5, 0.25, 0.125),
            cpu_count=lambda: 2,
        ).collect()
        assert [m.mountpoint for m in data.mounts] == ["/"]
        assert data.mounts[0].percent == 93.0
        assert data.load_average == (0.5, 0.25, 0.12)

    def test_on_this_host(self) -> None:
        """The real sources give at least the root filesystem and sane memory figures."""
        data = ResourcesCollector().collect()
        assert data.memory.total_bytes > 0
        assert 0 <= data.memory.percent <= 100


class TestSocketOwners:
    def test_reads_owners_from_captured_proc_net(self) -> None:
        """Listening TCP and bound UDP sockets, IPv4 and IPv6, with their owning uid."""
        owners = socket_owners(FIXTURES / "proc-net")
        assert owners[("tcp", "::", 18080)] == 0
        assert owners[("udp", "0.0.0.0", 15353)] == 0
        assert ("tcp", "127.0.0.1", 5432) in owners  # PostgreSQL, as its own user
        assert owners[("tcp", "127.0.0.1", 5432)] != 0

    def test_user_without_process(self) -> None:
        """When the process behind a socket cannot be named, its user still is."""
        conns, _ = _captured_connections()
        data = PortsCollector(
            net_connections=lambda kind: conns,
            process=lambda pid: (None, None),  # as for an agent without capabilities
            owners=lambda: socket_owners(FIXTURES / "proc-net"),
        ).collect()
        mine = next(x for x in data.listeners if x.port == 18080)
        assert (mine.process, mine.user) == (None, "root")
