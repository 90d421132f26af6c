"""The documentation keeps up with the code: every setting is documented, the quick start
is two commands, and CI runs the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from fleetwatch.agent.settings import AgentSettings
from fleetwatch.collector.settings import ClientSettings, CollectorSettings

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize(
    ("settings", "doc"),
    [
        (AgentSettings, "docs/agent.md"),
        (CollectorSettings, "docs/collector.md"),
        (ClientSettings, "docs/collector.md"),
    ],
)
def test_every_setting_is_documented(settings: type[BaseSettings], doc: str) -> None:
    text = (ROOT / doc).read_text()
    for name, field in settings.model_fields.items():
        assert field.description, f"{settings.__name__}.{name} has no description"
        variable = f"FLEETWATCH_{name.upper()}"
        if name.endswith("_file"):
            variable = f"FLEETWATCH_{name.upper().removesuffix('_FILE')}"  # documented as (_FILE)
        assert variable in text, f"{variable} is not in {doc}"


def test_quick_start_is_two_commands_and_ci_runs_the_second() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("##", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["./scripts/demo", "./scripts/test"]
    assert "./scripts/test" in (ROOT / ".ci" / "run").read_text()
