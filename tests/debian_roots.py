"""Debian roots for tests that install, hold or remove packages: never on the machine itself.

``scripts/debian-root SUITE [PACKAGE...]`` builds a root once with debootstrap and caches it
outside the clone (``.ci/run`` builds the ones the suite uses before the tests start). A test
asks for one with :func:`cached_root`, which skips with a reason when it was not built, and
works on a private overlay of it (:func:`private_root`), so the cached root never changes.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "debian-root"
CACHE = Path(os.environ.get("FLEETWATCH_ROOT_CACHE", "/var/cache/fleetwatch-tests/roots"))


def cached_root(suite: str, *packages: str) -> Path:
    """The cached root for ``suite`` with ``packages``; skips the test when it is not built.

    Building downloads from Debian's archive, which a test must not do: ``.ci/run`` (or
    ``scripts/debian-root`` by hand) builds it first.
    """
    if os.geteuid() != 0:
        pytest.skip("Debian roots need root (chroot, overlay mounts)")
    if shutil.which("chroot") is None:
        pytest.skip("Debian roots need chroot")
    found = subprocess.run(
        [str(SCRIPT), suite, *packages],
        env={**os.environ, "FLEETWATCH_ROOT_CACHE": str(CACHE), "FLEETWATCH_ROOT_NO_BUILD": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode != 0:
        pytest.skip(
            f"no cached Debian {suite} root with {' '.join(packages) or 'no extra packages'}: "
            f"run scripts/debian-root {suite} {' '.join(packages)} ({found.stderr.strip()})"
        )
    return Path(found.stdout.strip())


@contextlib.contextmanager
def private_root(root: Path, directory: Path) -> Iterator[Path]:
    """A writable copy of ``root`` under ``directory``: an overlay, removed on exit.

    /proc, /sys and /dev are bind-mounted in so that apt, dpkg and Python work in a chroot.
    """
    upper, work, merged = directory / "upper", directory / "work", directory / "root"
    for path in (upper, work, merged):
        path.mkdir(parents=True, exist_ok=True)
    mounted: list[Path] = []
    try:
        subprocess.run(
            [
                "mount", "-t", "overlay", "overlay",
                "-o", f"lowerdir={root},upperdir={upper},workdir={work}", str(merged),
            ],
            check=True,
        )  # fmt: skip
        mounted.append(merged)
        for name, argv in (
            ("proc", ["mount", "-t", "proc", "proc"]),
            ("sys", ["mount", "--rbind", "/sys"]),
            ("dev", ["mount", "--rbind", "/dev"]),
        ):
            target = merged / name
            target.mkdir(exist_ok=True)
            subprocess.run([*argv, str(target)], check=True)
            mounted.append(target)
        yield merged
    finally:
        for path in reversed(mounted):
            subprocess.run(["umount", "-R", "-l", str(path)], check=False)


def chroot_run(
    root: Path, *argv: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside ``root`` with a clean environment; output captured as text."""
    base = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
    return subprocess.run(
        ["chroot", str(root), *argv],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        check=check,
    )


_REAPER = (
    "import os, time\n"
    "while True:\n"
    "    try:\n"
    "        os.wait()\n"
    "    except ChildProcessError:\n"
    "        time.sleep(0.2)\n"
)


# The utmp record init writes on entering runlevel 2 (glibc's struct utmp on Linux, 384
# bytes: RUN_LVL, the runlevels in ut_pid, "~" as line, "runlevel" as user).
_RUNLEVEL_RECORD = (
    "import struct\n"
    "record = struct.pack('<hxxi32s4s32s256shhiii4i20x', 1, ord('2') + 256 * ord('N'),"
    " b'~', b'~~', b'runlevel', b'', 0, 0, 0, 0, 0, 0, 0, 0, 0)\n"
    "open('/run/utmp', 'wb').write(record)\n"
)


class Machine:
    """A Debian root run as a machine of its own, which can be switched off and on again.

    Powered on, it has its own PID namespace, a fresh ``/run`` (tmpfs) and its own ``/proc``;
    its process 1 only reaps orphans, as init does. Powering off kills that process, and the
    kernel kills every process of the namespace with it, as at power loss; ``boot()`` then runs
    the machine's multi-user boot scripts (``/etc/init.d/rc 2``). The early boot (``rcS``:
    mounting, the clock, the hostname) is the real machine's and is not run. The network is
    the machine's: a server on 127.0.0.1 outside is reachable from inside.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._unshare: subprocess.Popen[bytes] | None = None
        self.init_pid = 0

    def power_on(self) -> None:
        root = shlex.quote(str(self.root))
        mounts = f"mount -t proc proc {root}/proc && mount -t tmpfs -o mode=755 tmpfs {root}/run"
        reaper = f"{shlex.quote(sys.executable)} -c {shlex.quote(_REAPER)}"
        self._unshare = subprocess.Popen(
            [
                "unshare", "--pid", "--fork", "--mount", "--propagation", "private", "--uts",
                "sh", "-c",
                f"{mounts} && exec {reaper}",
            ]
        )  # fmt: skip
        children = Path(f"/proc/{self._unshare.pid}/task/{self._unshare.pid}/children")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pids = children.read_text().split() if children.exists() else []
            # the shell has mounted /proc and /run once it has become the reaper
            with contextlib.suppress(OSError):
                if (
                    pids
                    and Path(f"/proc/{pids[0]}/exe").readlink() == Path(sys.executable).resolve()
                ):
                    self.init_pid = int(pids[0])
                    return
            if self._unshare.poll() is not None:
                break
            time.sleep(0.05)
        msg = f"the machine in {self.root} did not power on"
        raise RuntimeError(msg)

    def power_off(self) -> None:
        if self._unshare is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.init_pid, signal.SIGKILL)
        self._unshare.wait(timeout=30)
        self._unshare = None

    def run(
        self, *argv: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on the machine (its namespaces, chrooted); output captured as text."""
        base = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
        done = subprocess.run(
            [
                "nsenter", f"--target={self.init_pid}", "--pid", "--mount", "--uts", "--",
                "chroot", str(self.root), *argv,
            ],
            env={**base, **(env or {})},
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            msg = f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            raise AssertionError(msg)
        return done

    def boot(self) -> subprocess.CompletedProcess[str]:
        """Power on and enter runlevel 2 as sysvinit does: record it in utmp (where
        ``runlevel`` and ``invoke-rc.d`` look), then run ``/etc/init.d/rc 2``."""
        self.power_on()
        self.run("python3", "-c", _RUNLEVEL_RECORD)
        rc = self.root / "etc/init.d/rc"  # a link to /lib/init/rc: resolved inside only
        if not (rc.is_symlink() or rc.exists()):  # a root without sysvinit (sysv-rc)
            return subprocess.CompletedProcess(["/etc/init.d/rc", "2"], 0, "", "")
        return self.run("/etc/init.d/rc", "2", env={"RUNLEVEL": "2", "PREVLEVEL": "N"})

    def processes(self) -> list[str]:
        """Command lines of the machine's processes, its process 1 left out."""
        listing = self.run("ps", "-e", "--no-headers", "-o", "pid=,args=").stdout
        return [line.split(None, 1)[1] for line in listing.splitlines() if line.split()[0] != "1"]
