"""The lab: real test hosts on one machine, for pyinfra over real SSH.

Each host is a network namespace with its own address on a bridge, its own hostname (UTS
namespace), its own processes (PID namespace, with a small init that reaps orphans), private
copies of every path a deploy writes (overlay mounts of /etc, /opt, /var, /usr/local, /root and
/home, fresh /run and /tmp, in a mount namespace of its own), and its own sshd with key-only
authentication.

    python -m tests.lab up 3 [--dir DIR]     build three hosts; prints an inventory
    python -m tests.lab down [--dir DIR]     tear them down

It needs root; without root it says so and stops. ``down`` removes every namespace, veth,
bridge, mount and process the lab made, and the lab directory.

A host can instead run on a private root (``Lab.create(..., root=PATH)``): its whole
filesystem is an overlay of a cached debootstrapped Debian root (tests/debian_roots.py), entered
with chroot inside the host's namespaces, with /proc, /sys, /dev, a fresh /run and /tmp, and the
root's own sshd. Installing packages on such a host writes only into the overlay, never into
this machine; the other hosts, which overlay the machine's own /usr, must never install any.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

OVERLAID = ("etc", "opt", "var", "usr/local", "root", "home")
DEFAULT_DIR = Path("/tmp/fleetwatch-lab")
STATE_FILE = "lab.json"
SUBNET_LOCK = Path("/run/fleetwatch-lab.lock")
SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
# PID 1 of a lab host: starts sshd, reaps every orphan (daemons double-fork), ends with sshd.
INIT = (
    "import os, subprocess, sys\n"
    "sshd = subprocess.Popen(sys.argv[1:])\n"
    "while True:\n"
    "    pid, _ = os.wait()\n"
    "    if pid == sshd.pid: sys.exit(1)\n"
)


class LabError(RuntimeError):
    """The lab cannot be built here; the message says what is missing."""


def missing_requirements() -> str | None:
    """Why this machine cannot build a lab, or None when it can."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, mounts, a system user per host)"
    for tool in ("ip", "unshare", "nsenter", "ssh-keygen", "python3"):
        if shutil.which(tool) is None:
            return f"the lab needs {tool}"
    if not Path(SSHD).exists():
        return f"the lab needs sshd ({SSHD}; apt-get install openssh-server)"
    if not Path(SFTP_SERVER).exists():
        return f"the lab needs {SFTP_SERVER} (openssh-sftp-server)"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the lab needs overlayfs in the kernel"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, check=False)
    if probe.returncode != 0:
        return "the lab needs network namespaces (ip netns list failed)"
    return None


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting to be reaped does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        msg = f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}"
        raise LabError(msg)
    return done


def _free_subnet() -> ipaddress.IPv4Network:
    used = _run("ip", "-4", "-o", "addr", "show").stdout
    for third in range(1, 255):
        subnet = ipaddress.IPv4Network(f"10.213.{third}.0/24")
        if f" 10.213.{third}." not in used:
            return subnet
    msg = "no free 10.213.x.0/24 subnet for a lab"
    raise LabError(msg)


@dataclass
class Spawned:
    """A command started on a lab host; nsenter forks it, in nsenter's process group."""

    process: subprocess.Popen[bytes]

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def wait(self) -> int:
        return self.process.wait()


@dataclass
class LabHost:
    name: str
    address: str
    netns: str
    veth: str
    directory: str
    pid: int | None = None
    root: str = ""  # a private root (a cached Debian root under an overlay), or the machine's

    @property
    def inventory_data(self) -> dict[str, object]:
        return {"ssh_hostname": self.address}


@dataclass
class Lab:
    """A set of lab hosts, and everything needed to take them down again."""

    directory: Path
    tag: str = ""
    bridge: str = ""
    subnet: str = ""
    hosts: list[LabHost] = field(default_factory=list)

    @property
    def gateway(self) -> str:
        return str(next(ipaddress.IPv4Network(self.subnet).hosts()))

    @property
    def key(self) -> Path:
        return self.directory / "id_ed25519"

    # -- building ---------------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path, names: list[str], root: Path | None = None) -> Lab:
        """Build hosts with these names; on any failure, whatever was built is torn down.

        With ``root`` (a Debian root with python3 and openssh-server) every host runs on a
        private overlay of it instead of the machine's own filesystem.
        """
        reason = missing_requirements()
        if reason:
            raise LabError(reason)
        directory = directory.resolve()
        for path in OVERLAID:
            if directory.is_relative_to(Path("/") / path):
                msg = f"the lab directory {directory} cannot be under /{path}, which hosts overlay"
                raise LabError(msg)
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        tag = os.urandom(2).hex()
        lab = cls(directory=directory, tag=tag, bridge=f"fwl{tag}br")
        try:
            lab._build(names, root)
        except BaseException:
            lab.destroy()
            raise
        return lab

    def _build(self, names: list[str], root: Path | None = None) -> None:
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key))
        # Labs built at once (the suite runs in several processes) must not pick one subnet:
        # the pick and the bridge's address that claims it happen under one lock.
        with SUBNET_LOCK.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            subnet = _free_subnet()
            self.subnet = str(subnet)
            addresses = list(subnet.hosts())
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            self.save()
            _run("ip", "addr", "add", f"{addresses[0]}/{subnet.prefixlen}", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for index, name in enumerate(names, start=1):
            host = LabHost(
                name=name,
                address=str(addresses[9 + index]),
                netns=f"fwl{self.tag}h{index}",
                veth=f"fwl{self.tag}v{index}",
                directory=str(self.directory / f"h{index}"),
                root=str(root.resolve()) if root else "",
            )
            self.hosts.append(host)
            self.save()
            self._build_host(host, subnet.prefixlen)
            self.save()
        for host in self.hosts:
            self._wait_for_ssh(host)

    def _build_host(self, host: LabHost, prefix: int) -> None:
        base = Path(host.directory)
        base.mkdir(parents=True, exist_ok=True)
        _run("ip", "netns", "add", host.netns)
        _run(
            "ip",
            "link",
            "add",
            host.veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            host.netns,
        )
        _run("ip", "link", "set", host.veth, "master", self.bridge, "up")
        inside = ("ip", "netns", "exec", host.netns)
        _run(*inside, "ip", "link", "set", "lo", "up")
        _run(*inside, "ip", "addr", "add", f"{host.address}/{prefix}", "dev", "eth0")
        _run(*inside, "ip", "link", "set", "eth0", "up")
        _run(*inside, "ip", "route", "add", "default", "via", self.gateway)
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / "host_key"))
        (base / "sshd_config").write_text(
            f"ListenAddress {host.address}\n"
            "Port 22\n"
            "HostKey /etc/ssh/fwlab_host_key\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\n"
            "AuthorizedKeysFile /root/.ssh/authorized_keys\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "PidFile /run/sshd.pid\n"
            f"Subsystem sftp {SFTP_SERVER}\n"
            "AcceptEnv LANG LC_*\n"
        )
        script = self._private_root_script(host) if host.root else self._script(host)
        log = (base / "sshd.log").open("ab")
        process = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                host.netns,
                "unshare",
                "--mount",
                "--uts",
                "--pid",
                "--fork",
                "--mount-proc",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        host.pid = process.pid

    def _script(self, host: LabHost) -> str:
        """The shell that sets a host up on the machine's own filesystem, then runs its init."""
        base = Path(host.directory)
        mounts = "\n".join(
            f"mkdir -p {base}/upper/{d} {base}/work/{d}\n"
            f"mount -t overlay overlay -o lowerdir=/{d},upperdir={base}/upper/{d},"
            f"workdir={base}/work/{d} /{d}"
            for d in OVERLAID
        )
        return f"""set -e
hostname {host.name}
{mounts}
install -m 600 {base}/host_key /etc/ssh/fwlab_host_key
install -m 600 {base}/sshd_config /etc/ssh/fwlab_sshd_config
mkdir -p /root/.ssh && chmod 700 /root/.ssh
install -m 600 {self.key}.pub /root/.ssh/authorized_keys
echo {host.name} > /etc/hostname
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/sshd
mount -t tmpfs -o mode=1777 tmpfs /tmp
cd /  # the directory this was started from may now be hidden
exec python3 -c '{INIT}' {SSHD} -D -e -f /etc/ssh/fwlab_sshd_config
"""

    def _private_root_script(self, host: LabHost) -> str:
        """The shell that sets a host up on an overlay of its private root, then chroots into
        it and runs its init there, with the root's own sshd and python3."""
        base = Path(host.directory)
        merged = base / "root"
        for name in ("upper", "work", "root"):
            (base / name).mkdir(exist_ok=True)
        return f"""set -e
hostname {host.name}
mount -t overlay overlay -o lowerdir={host.root},upperdir={base}/upper,workdir={base}/work {merged}
mount -t proc proc {merged}/proc
mount --rbind /sys {merged}/sys
mount --rbind /dev {merged}/dev
mount -t tmpfs -o mode=755 tmpfs {merged}/run
mount -t tmpfs -o mode=1777 tmpfs {merged}/tmp
mkdir -p {merged}/run/sshd
# a host lets its services start: the cached root forbids it while it is built
rm -f {merged}/usr/sbin/policy-rc.d
install -m 600 {base}/host_key {merged}/etc/ssh/fwlab_host_key
install -m 600 {base}/sshd_config {merged}/etc/ssh/fwlab_sshd_config
mkdir -p {merged}/root/.ssh && chmod 700 {merged}/root/.ssh
install -m 600 {self.key}.pub {merged}/root/.ssh/authorized_keys
echo {host.name} > {merged}/etc/hostname
cd /
exec chroot {merged} python3 -c '{INIT}' {SSHD} -D -e -f /etc/ssh/fwlab_sshd_config
"""

    def _ssh_argv(self, host: LabHost, command: str, *options: str) -> list[str]:
        """ssh as root to a lab host with the lab's key; its host key changes with every lab."""
        argv = ["ssh", "-i", str(self.key), "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]
        for option in ("StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", *options):
            argv += ["-o", option]
        return [*argv, f"root@{host.address}", command]

    def _wait_for_ssh(self, host: LabHost, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe = subprocess.run(
                self._ssh_argv(host, "hostname", "ConnectTimeout=2"),
                capture_output=True,
                text=True,
                check=False,
            )
            if probe.returncode == 0 and probe.stdout.strip() == host.name:
                return
            time.sleep(0.2)
        log = (Path(host.directory) / "sshd.log").read_text()[-2000:]
        msg = f"lab host {host.name} ({host.address}) did not answer over SSH: {log}"
        raise LabError(msg)

    # -- using ------------------------------------------------------------------------

    def host(self, name: str) -> LabHost:
        return next(h for h in self.hosts if h.name == name)

    def ssh(self, name: str, command: str, *, check: bool = True, timeout: float = 120) -> str:
        """Run a shell command on a lab host as root, over SSH."""
        host = self.host(name)
        done = subprocess.run(
            self._ssh_argv(host, command),
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            msg = f"{name}: {command}: exit {done.returncode}: {done.stderr.strip()[-1000:]}"
            raise LabError(msg)
        return done.stdout

    def spawn(self, name: str, argv: list[str]) -> Spawned:
        """Start a process on a host, in all its namespaces (a listener, say)."""
        host = self.host(name)
        init = _children(host.pid)[0] if host.pid else None
        if init is None:
            msg = f"lab host {name} is not running"
            raise LabError(msg)
        # a host on a private root runs chrooted: so does what is started on it
        chrooted = ["--root"] if host.root else []
        return Spawned(
            subprocess.Popen(
                [
                    "nsenter",
                    "-t",
                    str(init),
                    "-n",
                    "-m",
                    "-u",
                    "-p",
                    *chrooted,
                    "--wd=/",
                    "--",
                    *argv,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )

    def inventory_data(self) -> dict[str, object]:
        """Connection data every lab host needs, for the inventory's ``all`` group."""
        return {
            "ssh_user": "root",
            "ssh_key": str(self.key),
            "ssh_strict_host_key_checking": "off",
            "ssh_known_hosts_file": "/dev/null",
        }

    def write_inventory(self, path: Path) -> Path:
        hosts = [(h.name, h.inventory_data) for h in self.hosts]
        path.write_text(
            "# Lab hosts (python -m tests.lab); connection data only.\n"
            f"lab = {hosts!r}\n"
            f"all = ({[h.name for h in self.hosts]!r}, {self.inventory_data()!r})\n"
        )
        return path

    # -- tearing down -----------------------------------------------------------------

    def save(self) -> None:
        data = asdict(self)
        data["directory"] = str(self.directory)
        (self.directory / STATE_FILE).write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, directory: Path) -> Lab:
        data = json.loads((directory / STATE_FILE).read_text())
        hosts = [LabHost(**h) for h in data.pop("hosts")]
        data["directory"] = Path(data["directory"])
        return cls(**data, hosts=hosts)

    def destroy(self) -> None:
        """Take everything down: processes, namespaces (and their mounts), links, files."""
        for host in self.hosts:
            pids = _run("ip", "netns", "pids", host.netns, check=False).stdout.split()
            if host.pid:
                pids.append(str(host.pid))
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        deadline = time.monotonic() + 10
        for host in self.hosts:
            while host.pid and _alive(host.pid) and time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(host.pid, os.WNOHANG)  # reap it, when it is our child
                time.sleep(0.02)
            while time.monotonic() < deadline:
                if not _run("ip", "netns", "pids", host.netns, check=False).stdout.split():
                    break
                time.sleep(0.05)
            _run("ip", "link", "del", host.veth, check=False)
            _run("ip", "netns", "del", host.netns, check=False)
        if self.bridge:
            _run("ip", "link", "del", self.bridge, check=False)
        shutil.rmtree(self.directory, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """What of this lab is still on the machine (empty after a clean teardown)."""
        found = []
        namespaces = _run("ip", "netns", "list", check=False).stdout
        links = _run("ip", "-o", "link", "show", check=False).stdout
        mounts = Path("/proc/mounts").read_text()
        for host in self.hosts:
            if host.netns in namespaces:
                found.append(f"namespace {host.netns}")
            if f" {host.veth}@" in links or f" {host.veth}:" in links:
                found.append(f"link {host.veth}")
            if host.pid and _alive(host.pid):
                found.append(f"process {host.pid}")
        if self.bridge and f" {self.bridge}:" in links:
            found.append(f"bridge {self.bridge}")
        if str(self.directory) in mounts:
            found.append(f"mounts of {self.directory}")
        if self.directory.exists():
            found.append(f"directory {self.directory}")
        return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help="where the lab keeps its files"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="build lab hosts and print an inventory for them")
    up.add_argument("count", type=int)
    up.add_argument("--name", default="lab-h{}", help="host name pattern ({} is the number)")
    commands.add_parser("down", help="tear the lab down")
    args = parser.parse_args(argv)
    reason = missing_requirements()
    if reason:
        print(f"lab: {reason}", file=sys.stderr)
        return 2
    if args.command == "up":
        if (args.dir / STATE_FILE).exists():
            print(f"lab: a lab already runs in {args.dir}; take it down first", file=sys.stderr)
            return 1
        names = [args.name.format(i) for i in range(1, args.count + 1)]
        try:
            lab = Lab.create(args.dir, names)
        except LabError as exc:
            print(f"lab: {exc}", file=sys.stderr)
            return 1
        inventory = lab.write_inventory(args.dir / "inventory.py")
        for host in lab.hosts:
            print(f"{host.name}\t{host.address}")
        print(f"inventory: {inventory}\nssh: ssh -i {lab.key} root@{lab.hosts[0].address}")
        return 0
    if not (args.dir / STATE_FILE).exists():
        print(f"lab: no lab in {args.dir}", file=sys.stderr)
        return 0
    lab = Lab.load(args.dir)
    lab.destroy()
    left = lab.leftovers()
    if left:
        print("lab: left behind: " + ", ".join(left), file=sys.stderr)
        return 1
    print("lab: torn down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
