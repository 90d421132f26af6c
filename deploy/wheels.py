"""Building wheelhouses: fleetwatch and its dependencies as wheels, built where pyinfra runs.

Hosts need no package index: the deploy uploads a wheelhouse (the ``wheelhouse`` operation in
`fleetwatch.deploy.operations`) and installs from it with ``--no-index``. The wheels are
picked for each host's Python version, C library and architecture, so the machine running
pyinfra may differ from the hosts. Wheelhouses are kept in ``~/.cache/fleetwatch/wheelhouses``
and built again only when fleetwatch's source changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

from packaging.requirements import Requirement

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fleetwatch"
SOURCE_PARTS = ("pyproject.toml", "fleetwatch", "agent", "collector", "deploy")
_lock = threading.Lock()  # gevent makes it cooperative when pyinfra runs hosts at once


class WheelhouseError(RuntimeError):
    """A wheelhouse that could not be built; the message carries pip's complaint."""


@dataclass(frozen=True)
class Target:
    """What a host's wheels must fit."""

    python: str  # "3.11"
    machine: str  # "x86_64"
    libc: str  # glibc version, "2.36"

    def platforms(self) -> list[str]:
        """manylinux tags a host with this glibc accepts, newest first."""
        major, _, minor_text = self.libc.partition(".")
        minor = int(minor_text or 0) if major == "2" else 17
        tags = [f"manylinux_2_{m}_{self.machine}" for m in range(minor, 4, -1)]
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        tags += [f"{name}_{self.machine}" for m, name in legacy.items() if m <= minor]
        return tags


@dataclass(frozen=True)
class Wheelhouse:
    """A built wheelhouse: the directory of wheels, and the fleetwatch version it installs."""

    directory: Path
    version: str

    @property
    def digest(self) -> str:
        """Names and sizes of its wheels: what tells one wheelhouse from another."""
        wheels = sorted(self.directory.glob("*.whl"))
        listing = "\n".join(f"{w.name} {w.stat().st_size}" for w in wheels)
        return hashlib.sha256(listing.encode()).hexdigest()[:32]


def default_source() -> Path | None:
    """The source tree this deploy package comes from, when it runs from one."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").exists() and (root / "agent").is_dir() else None


def _fingerprint(source: Path) -> str:
    digest = hashlib.sha256()
    for part in SOURCE_PARTS:
        path = source / part
        files = (
            [path]
            if path.is_file()
            else sorted(path.rglob("*.py"))
            + sorted(path.rglob("*.toml"))
            + sorted(path.rglob("*.mako"))
        )
        for file in files:
            if "__pycache__" in file.parts:
                continue
            digest.update(str(file.relative_to(source)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def _pip(*args: str) -> None:
    done = subprocess.run(  # noqa: S603  (pip, with arguments of ours)
        [
            sys.executable,
            "-m",
            "pip",
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        msg = f"pip {' '.join(args[:2])} failed: {(done.stderr or done.stdout).strip()[-2000:]}"
        raise WheelhouseError(msg)


def fleetwatch_wheel(source: Path) -> Path:
    """fleetwatch's own wheel: the given one, or built from a source tree (cached)."""
    if source.is_file() and source.suffix == ".whl":
        return source
    if not (source / "pyproject.toml").exists():
        msg = f"{source} is neither a wheel nor a fleetwatch source tree"
        raise WheelhouseError(msg)
    out = CACHE / "wheels" / _fingerprint(source)
    built = sorted(out.glob("fleetwatch-*.whl"))
    if built:
        return built[0]
    with tempfile.TemporaryDirectory() as tmp:
        # build from a copy: a build writes egg-info and build/ next to the sources
        copy = Path(tmp) / "src"
        shutil.copytree(
            source,
            copy,
            ignore=shutil.ignore_patterns(
                ".venv", ".git", "__pycache__", "*.egg-info", "build", "dist", ".lab", "tests"
            ),
        )
        _pip("wheel", "--no-deps", "--quiet", "--wheel-dir", str(Path(tmp) / "out"), str(copy))
        out.mkdir(parents=True, exist_ok=True)
        for wheel in (Path(tmp) / "out").glob("fleetwatch-*.whl"):
            shutil.copy2(wheel, out / wheel.name)
    return min(out.glob("fleetwatch-*.whl"))


def marked_requirements(wheel: Path, target: Target, extras: str = "") -> list[str]:
    """The wheel's dependencies that only ``target``'s Python needs, such as tomli below 3.11.

    ``pip download --python-version`` picks wheels for the target's Python but evaluates
    environment markers for the Python running it, so these are named to it explicitly.
    """
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = HeaderParser().parsestr(archive.read(name).decode())
    here = ".".join(str(part) for part in sys.version_info[:3])
    there = {"extra": extras, "python_version": target.python}
    mine = {"extra": extras, "python_version": here.rsplit(".", 1)[0]}
    found = []
    for line in metadata.get_all("Requires-Dist") or []:
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is None:
            continue
        there["python_full_version"], mine["python_full_version"] = f"{target.python}.0", here
        if marker.evaluate(there) and not marker.evaluate(mine):
            requirement.marker = None
            found.append(str(requirement))
    return found


def build(source: Path, target: Target, extras: str = "") -> Wheelhouse:
    """A directory of wheels that installs ``fleetwatch[extras]`` on hosts like ``target``."""
    with _lock:
        wheel = fleetwatch_wheel(source)
        version = wheel.name.split("-")[1]
        marked = marked_requirements(wheel, target, extras)
        key = hashlib.sha256(
            f"{wheel.name}:{wheel.stat().st_size}:{wheel.stat().st_mtime_ns}:{extras}:"
            f"{target}:{marked}".encode()
        ).hexdigest()[:16]
        directory = CACHE / "wheelhouses" / key
        if (directory / ".complete").exists():
            return Wheelhouse(directory, version)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        requirement = f"fleetwatch[{extras}] @ {wheel.as_uri()}" if extras else str(wheel)
        platform_args = [arg for tag in target.platforms() for arg in ("--platform", tag)]
        _pip(
            "download",
            "--quiet",
            "--only-binary=:all:",
            "--python-version",
            target.python,
            "--implementation",
            "cp",
            *platform_args,
            "--dest",
            str(directory),
            requirement,
            *marked,
        )
        (directory / ".complete").write_text(version)
        return Wheelhouse(directory, version)
