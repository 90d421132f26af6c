"""The layers of docs/architecture.md hold: the import contracts, and one namespace."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
BARE = {"agent", "collector", "deploy"}
SOURCES = ("fleetwatch", "agent", "collector", "deploy", "tests", "benchmarks", "inventory")


class TestLayers:
    def test_import_contracts_are_kept(self) -> None:
        """Every contract in pyproject.toml's [tool.importlinter] is kept."""
        if not LINT_IMPORTS.exists():
            pytest.skip("import-linter is not installed (pip install 'fleetwatch[dev]')")
        done = subprocess.run(
            [str(LINT_IMPORTS), "--no-cache"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        assert "0 broken" in done.stdout

    def test_a_broken_contract_is_reported(self, tmp_path: Path) -> None:
        """The checker does see lazy imports: a contract the code breaks fails the check."""
        if not LINT_IMPORTS.exists():
            pytest.skip("import-linter is not installed (pip install 'fleetwatch[dev]')")
        config = tmp_path / "contracts.toml"
        config.write_text(
            "[tool.importlinter]\n"
            'root_package = "fleetwatch"\n'
            "[[tool.importlinter.contracts]]\n"
            'name = "the admin tool never reaches the deploy side (it does, for policy compile)"\n'
            'type = "forbidden"\n'
            'source_modules = ["fleetwatch.collector.admin"]\n'
            'forbidden_modules = ["fleetwatch.deploy"]\n'
        )
        done = subprocess.run(
            [str(LINT_IMPORTS), "--no-cache", "--config", str(config)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode != 0
        assert "BROKEN" in done.stdout


class TestNamespace:
    def test_nothing_imports_a_bare_top_level_package(self) -> None:
        """No code imports `agent`, `collector` or `deploy`: only `fleetwatch.*` exists."""
        offenders = []
        for folder in SOURCES:
            for path in sorted((ROOT / folder).rglob("*.py")):
                if path.is_relative_to(ROOT / "fleetwatch") and path.parent != ROOT / "fleetwatch":
                    continue  # the links to the other folders: read there
                tree = ast.parse(path.read_text(), str(path))
                for node in ast.walk(tree):
                    names = []
                    if isinstance(node, ast.Import):
                        names = [alias.name for alias in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        names = [node.module]
                    offenders += [
                        f"{path.relative_to(ROOT)}:{node.lineno} imports {name}"
                        for name in names
                        if name.split(".")[0] in BARE
                    ]
        assert offenders == []

    def test_the_side_folders_are_the_namespace_packages(self) -> None:
        """fleetwatch/agent, collector and deploy are the top-level folders of those names."""
        for side in sorted(BARE):
            assert (ROOT / "fleetwatch" / side).resolve() == ROOT / side
