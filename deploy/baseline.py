"""The inventory as the baseline: compile a pyinfra inventory into the collector's policy.

The inventory is loaded with pyinfra's own loader, so group and host data resolve exactly as
in a deploy. Every inventory host gets a table with its unit (``fleetwatch_unit``), its groups
and its resolved baseline: each policy key read from the data key of the same name with the
``fleetwatch_`` prefix (``fleetwatch_allowed_ports``, ``fleetwatch_required_services``...).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetwatch.collector.compliance.policy import Baseline, Policy, PolicyError
from fleetwatch.deploy.tomlfile import toml_table

if TYPE_CHECKING:
    from pyinfra.api import Inventory

PREFIX = "fleetwatch_"
BASELINE_KEYS = tuple(Baseline.model_fields)
SKIPPED_GROUPS = frozenset({"all", "fleetwatch_collectors"})


class InventoryError(Exception):
    """An inventory that cannot be loaded or whose baseline is not valid."""


def _baseline(data: dict[str, Any]) -> dict[str, Any]:
    return {key: data[PREFIX + key] for key in BASELINE_KEYS if data.get(PREFIX + key) is not None}


def policy_text(inventory: Inventory, source: str = "the inventory") -> str:
    """The policy file for an inventory already loaded (as in a running deploy)."""
    everyone = {host.name for host in inventory}
    # "all", and the group pyinfra names after the inventory file, hold every host: they say
    # nothing a host's own groups do not.
    universal = {
        name for name, members in inventory.groups.items() if {h.name for h in members} == everyone
    }
    lines = [
        f"# Compiled from {source} by fleetwatch; edit the inventory's data, not this file.",
        "# Each host's table holds its whole resolved baseline.",
        "",
        toml_table("defaults", _baseline(dict(inventory.get_data()))),
    ]
    groups: set[str] = set()
    hosts = []
    for host in inventory:
        data = dict(host.data.dict())
        host_groups = [g for g in host.groups if g not in SKIPPED_GROUPS | universal]
        groups.update(host_groups)
        hosts.append(
            toml_table(
                f'hosts."{host.name}"',
                {"unit": data.get(PREFIX + "unit"), "groups": host_groups, **_baseline(data)},
            )
        )
    lines += [f"[groups.{group}]\n" for group in sorted(groups)]
    text = "\n".join(lines + hosts)
    try:
        Policy.from_text(text, source)
    except PolicyError as exc:
        msg = f"the baseline in {source} is not valid: {exc}"
        raise InventoryError(msg) from exc
    return text


def compile_policy(inventory_path: str) -> str:
    """The policy file for a pyinfra inventory file (and its ``group_data/``)."""
    try:
        with warnings.catch_warnings():
            # pyinfra's command line patches the standard library for gevent on import; we
            # only read an inventory, with no connection made
            warnings.simplefilter("ignore")
            from pyinfra.api import Config, State  # noqa: PLC0415
            from pyinfra.context import ctx_config, ctx_state  # noqa: PLC0415
            from pyinfra_cli.inventory import make_inventory  # noqa: PLC0415
    except ImportError as exc:
        msg = "compiling an inventory needs pyinfra: pip install 'fleetwatch[deploy]'"
        raise InventoryError(msg) from exc
    path = Path(inventory_path)
    if not path.is_file():
        msg = f"{inventory_path}: no such inventory file"
        raise InventoryError(msg)
    state = State(check_for_changes=False)
    config = Config()
    try:
        with ctx_state.use(state), ctx_config.use(config):
            inventory = make_inventory(str(path.resolve()), cwd=str(path.parent.resolve()))
            state.init(inventory, config)
            return policy_text(inventory, str(path))
    except InventoryError:
        raise
    except Exception as exc:
        msg = f"{inventory_path}: cannot load the inventory: {type(exc).__name__}: {exc}"
        raise InventoryError(msg) from exc
