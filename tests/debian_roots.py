"""Debian roots for tests that install, hold or remove packages: never on the machine itself.

``scripts/debian-root SUITE [PACKAGE...]`` builds a root once with debootstrap and caches it
outside the clone (``.ci/run`` builds the ones the suite uses before the tests start). A test
asks for one with :func:`cached_root`, which skips with a reason when it was not built, and
works on a private overlay of it (:func:`private_root`), so the cached root never changes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
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
