"""A local apt repository made of real packages, for tests that need apt to see updates.

:func:`build_deb` makes a real .deb with ``dpkg-deb --build``; :func:`build_repo` lays out a
``dists/SUITE/main/binary-ARCH/Packages`` tree indexed by ``dpkg-scanpackages`` with a Release
file from ``apt-ftparchive``, its Origin, Label, Suite and Codename set as Debian sets them, so
apt's policy names the suite as it would name Debian's own.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Deb:
    """One binary package: its control fields (Package, Version, Architecture...)."""

    name: str
    version: str
    architecture: str = "all"
    source: str | None = None
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def filename(self) -> str:
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.architecture}.deb"


@dataclass(frozen=True)
class Suite:
    """A suite of the repository and its Release fields."""

    name: str
    codename: str
    origin: str
    label: str
    packages: tuple[Deb, ...]


def build_deb(deb: Deb, directory: Path) -> Path:
    """A real .deb for ``deb`` in ``directory``, with an empty payload but a README."""
    tree = directory / "build" / deb.filename.removesuffix(".deb")
    (tree / "DEBIAN").mkdir(parents=True, exist_ok=True)
    doc = tree / "usr" / "share" / "doc" / deb.name
    doc.mkdir(parents=True, exist_ok=True)
    (doc / "README").write_text(f"{deb.name} {deb.version}\n")
    control = {
        "Package": deb.name,
        "Version": deb.version,
        "Architecture": deb.architecture,
        "Maintainer": "fleetwatch tests <tests@fleetwatch.invalid>",
        **({"Source": deb.source} if deb.source else {}),
        **deb.fields,
        "Description": f"fleetwatch test package {deb.name}",
    }
    (tree / "DEBIAN" / "control").write_text("".join(f"{k}: {v}\n" for k, v in control.items()))
    out = directory / deb.filename
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(out)],
        check=True,
        capture_output=True,
    )
    return out


def build_repo(root: Path, suites: list[Suite], architectures: tuple[str, ...]) -> Path:
    """A repository under ``root``: ``deb [trusted=yes] file:ROOT CODENAME main`` per suite."""
    for suite in suites:
        pool = root / "pool" / suite.codename
        pool.mkdir(parents=True, exist_ok=True)
        for deb in suite.packages:
            build_deb(deb, pool)
        dist = root / "dists" / suite.codename
        for arch in architectures:
            binary = dist / "main" / f"binary-{arch}"
            binary.mkdir(parents=True, exist_ok=True)
            index = subprocess.run(
                ["dpkg-scanpackages", "--multiversion", "--arch", arch, f"pool/{suite.codename}"],
                cwd=root,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            (binary / "Packages").write_text(index)
        release = subprocess.run(
            [
                "apt-ftparchive",
                "-o", f"APT::FTPArchive::Release::Origin={suite.origin}",
                "-o", f"APT::FTPArchive::Release::Label={suite.label}",
                "-o", f"APT::FTPArchive::Release::Suite={suite.name}",
                "-o", f"APT::FTPArchive::Release::Codename={suite.codename}",
                "-o", "APT::FTPArchive::Release::Components=main",
                "-o", f"APT::FTPArchive::Release::Architectures={' '.join(architectures)}",
                "release", ".",
            ],
            cwd=dist,
            check=True,
            capture_output=True,
            text=True,
        ).stdout  # fmt: skip
        (dist / "Release").write_text(release)
    return root
