"""The wheel: one top-level package, ``fleetwatch``, with real files for its linked folders,
its data files, no recipes; installed in a fresh virtualenv, its commands run.

The repository links ``fleetwatch/agent``, ``collector`` and ``deploy`` to the top-level
folders; the wheel must hold those folders' files under ``fleetwatch/``, and nothing else at
its top.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetwatch import __version__

ROOT = Path(__file__).parent.parent
LINKED = ("agent", "collector", "deploy")
NOT_SHIPPED = ("deploy/recipes",)  # pyinfra runs them from a checkout
DIST_INFO = f"fleetwatch-{__version__}.dist-info"


def _run(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, check=False, timeout=600
    )
    assert done.returncode == 0, f"{argv}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """fleetwatch's wheel, built by pip from a copy of this repository (links kept as links)."""
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "source"
    # a copy, since a build writes build/ and *.egg-info beside the sources
    shutil.copytree(
        ROOT,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "__pycache__", "*.egg-info", "build", "dist", ".lab"
        ),
    )
    assert (source / "fleetwatch" / "agent").is_symlink()
    # -v: the build backend's own output, which test_the_build_warns_of_nothing reads
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", tmp / "out", source)
    (tmp / "build.log").write_text(built.stdout + built.stderr)
    (built,) = (tmp / "out").glob("fleetwatch-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


class TestWheel:
    def test_fleetwatch_is_the_only_top_level_package(self, wheel: zipfile.ZipFile) -> None:
        """No bare agent, collector or deploy module: top_level.txt and RECORD say fleetwatch."""
        assert wheel.read(f"{DIST_INFO}/top_level.txt").decode().split() == ["fleetwatch"]
        record = wheel.read(f"{DIST_INFO}/RECORD").decode().splitlines()
        tops = {line.split(",", 1)[0].split("/", 1)[0] for line in record if line}
        assert tops == {"fleetwatch", DIST_INFO}
        assert {name.split("/", 1)[0] for name in wheel.namelist()} == tops

    def test_linked_folders_ship_as_real_files(self, wheel: zipfile.ZipFile) -> None:
        """Every module of agent/, collector/ and deploy/ is in fleetwatch/, as itself."""
        entries = {info.filename: info for info in wheel.infolist()}
        missing, not_files = [], []
        for folder in LINKED:
            for path in sorted((ROOT / folder).rglob("*.py")):
                relative = path.relative_to(ROOT).as_posix()
                if "__pycache__" in relative or relative.startswith(NOT_SHIPPED):
                    continue
                info = entries.get(f"fleetwatch/{relative}")
                if info is None:
                    missing.append(relative)
                elif (
                    stat.S_ISLNK(info.external_attr >> 16) or info.file_size != path.stat().st_size
                ):
                    not_files.append(relative)
        assert missing == []
        assert not_files == []
        assert len([n for n in entries if n.startswith("fleetwatch/agent/")]) > 5

    def test_data_files_ship(self, wheel: zipfile.ZipFile) -> None:
        """Migrations and their template, py.typed and the example policy are in the wheel."""
        names = set(wheel.namelist())
        migrations = ROOT / "collector" / "storage" / "migrations"
        versions = sorted(p.name for p in (migrations / "versions").glob("*.py"))
        assert versions, "no migrations found in the repository"
        wanted = [
            *(f"fleetwatch/collector/storage/migrations/versions/{v}" for v in versions),
            "fleetwatch/collector/storage/migrations/script.py.mako",
            "fleetwatch/collector/storage/migrations/env.py",
            "fleetwatch/py.typed",
            "fleetwatch/collector/examples/policy.toml",
        ]
        assert [name for name in wanted if name not in names] == []

    def test_the_licence_ships_and_the_build_warns_of_nothing(self, wheel: zipfile.ZipFile) -> None:
        """SPDX licence and license-files: LICENSE in the wheel, no deprecation banner."""
        assert f"{DIST_INFO}/licenses/LICENSE" in wheel.namelist()
        metadata = wheel.read(f"{DIST_INFO}/METADATA").decode()
        assert "License-Expression: Apache-2.0" in metadata
        log = (Path(wheel.filename or "").parent.parent / "build.log").read_text()
        assert "adding license file 'LICENSE'" in log  # the backend's output is there
        assert "deprecat" not in log.lower()

    def test_recipes_stay_out(self, wheel: zipfile.ZipFile) -> None:
        """deploy/recipes are run from a checkout; an installed fleetwatch has no use for them."""
        assert [n for n in wheel.namelist() if n.startswith("fleetwatch/deploy/recipes")] == []
        assert "fleetwatch/deploy/deploys/agent.py" in wheel.namelist()


@pytest.mark.slow
class TestInstalled:
    def test_console_scripts_run_with_the_base_install(
        self, wheel: zipfile.ZipFile, tmp_path: Path
    ) -> None:
        """`pip install fleetwatch.whl` (the agent's dependencies only): both commands answer."""
        venv = tmp_path / "venv"
        _run(sys.executable, "-m", "venv", venv)
        _run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel.filename or "")
        for command in ("fleetwatch-agent", "fleetwatch"):
            done = _run(venv / "bin" / command, "--version", cwd=tmp_path)
            assert __version__ in done.stdout, (command, done.stdout)
        # from the virtualenv, not from this checkout
        where = _run(
            venv / "bin" / "python",
            "-c",
            "import fleetwatch.agent; print(fleetwatch.agent.__file__)",
            cwd=tmp_path,
        )
        assert Path(where.stdout.strip()).is_relative_to(venv)
