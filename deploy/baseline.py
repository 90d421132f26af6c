"""The inventory as the baseline: compile a pyinfra inventory into the collector's policy.

The inventory is loaded with pyinfra's own loader, so group and host data resolve exactly as
in a deploy. Every inventory host gets a table with its unit (``fleetwatch_unit``), its groups
and its resolved baseline: each policy key read from the data key of the same name with the
``fleetwatch_`` prefix (``fleetwatch_allowed_ports``, ``fleetwatch_required_services``...).

The response to findings comes from the data too: a unit's contacts from
``fleetwatch_unit_contacts`` beside its ``fleetwatch_unit`` (a dict: ``title``, ``emails``,
``targets``, ``digest``), and for the whole fleet ``fleetwatch_due_days``,
``fleetwatch_verification``, ``fleetwatch_waiver_warning_days`` and ``fleetwatch_waivers``
(a dict of named waivers; each group's and the ``all`` group's are gathered, so a waiver
lives in the group data of the hosts it concerns, reviewed like the rest of the inventory).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetwatch.collector.compliance.policy import Baseline, Policy, PolicyError

if TYPE_CHECKING:
    from pyinfra.api import Inventory

PREFIX = "fleetwatch_"
BASELINE_KEYS = tuple(Baseline.model_fields)
SKIPPED_GROUPS = frozenset({"all", "fleetwatch_collectors"})


class InventoryError(Exception):
    """An inventory that cannot be loaded or whose baseline is not valid."""


def _present(values: dict[str, Any]) -> dict[str, Any]:
    """The values that are set: TOML has no null, and a key left out takes its default."""
    return {key: value for key, value in values.items() if value is not None}


def _baseline(data: dict[str, Any]) -> dict[str, Any]:
    return _present({key: data.get(PREFIX + key) for key in BASELINE_KEYS})


def _sources(inventory: Inventory) -> list[tuple[str, dict[str, Any]]]:
    """The data of the ``all`` group and of each group, by name."""
    found = [("all", dict(inventory.get_data()))]
    found += [(name, dict(inventory.get_group_data(name))) for name in sorted(inventory.groups)]
    return found


def _response(inventory: Inventory, source: str) -> dict[str, Any]:
    """The policy's units, due days, verification and waivers, from the inventory's data."""
    units: dict[str, dict[str, Any]] = {}
    for host in inventory:
        data = dict(host.data.dict())
        unit, contacts = data.get(PREFIX + "unit"), data.get(PREFIX + "unit_contacts")
        if unit is None or contacts is None:
            continue
        if unit in units and units[unit] != contacts:
            msg = f"{source}: unit {unit!r} has two different fleetwatch_unit_contacts"
            raise InventoryError(msg)
        units[unit] = dict(contacts)
    waivers: dict[str, dict[str, Any]] = {}
    for group, data in _sources(inventory):
        for name, entry in (data.get(PREFIX + "waivers") or {}).items():
            if name in waivers and waivers[name] != entry:
                msg = f"{source}: waiver {name!r} is declared twice (again in group {group!r})"
                raise InventoryError(msg)
            waivers[name] = dict(entry)
    fleet = dict(inventory.get_data())
    document: dict[str, Any] = _present(
        {
            "units": dict(sorted(units.items())) or None,
            "due_days": fleet.get(PREFIX + "due_days"),
            "verification": fleet.get(PREFIX + "verification"),
            "waivers": dict(sorted(waivers.items())) or None,
        }
    )
    if fleet.get(PREFIX + "waiver_warning_days") is not None:
        document["response"] = {"waiver_warning_days": fleet[PREFIX + "waiver_warning_days"]}
    return document


def policy_text(inventory: Inventory, source: str = "the inventory") -> str:
    """The policy file for an inventory already loaded (as in a running deploy).

    Its tables: ``[defaults]`` (the ``all`` group's baseline), an empty ``[groups.NAME]`` for
    every group a host is in, and ``[hosts."NAME"]`` with each host's whole resolved baseline.
    """
    # Written by the deploy extra's TOML writer; compile_policy says so when it is missing.
    import tomli_w  # noqa: PLC0415

    everyone = {host.name for host in inventory}
    # "all", and the group pyinfra names after the inventory file, hold every host: they say
    # nothing a host's own groups do not.
    universal = {
        name for name, members in inventory.groups.items() if {h.name for h in members} == everyone
    }
    groups: set[str] = set()
    hosts: dict[str, dict[str, Any]] = {}
    for host in inventory:
        data = dict(host.data.dict())
        host_groups = [g for g in host.groups if g not in SKIPPED_GROUPS | universal]
        groups.update(host_groups)
        hosts[host.name] = _present(
            {"unit": data.get(PREFIX + "unit"), "groups": host_groups, **_baseline(data)}
        )
    document: dict[str, Any] = {"defaults": _baseline(dict(inventory.get_data()))}
    # an empty [groups] or [hosts] would say nothing
    if groups:
        document["groups"] = {group: {} for group in sorted(groups)}
    if hosts:
        document["hosts"] = hosts
    document.update(_response(inventory, source))  # after the hosts: units, due days, waivers
    text = (
        f"# Compiled from {source} by fleetwatch; edit the inventory's data, not this file.\n"
        "# Each host's table holds its whole resolved baseline.\n\n"
    ) + tomli_w.dumps(document)
    try:
        Policy.from_text(text, source)
    except PolicyError as exc:
        msg = f"the baseline in {source} is not valid: {exc}"
        raise InventoryError(msg) from exc
    return text


def inventory_file(path: Path) -> Path:
    """The inventory file at ``path``: the file itself, or the one ``.py`` file of a directory
    that also holds ``group_data/`` (``inventory/`` -> ``inventory/fleet.py``)."""
    if path.is_file():
        return path
    if not path.is_dir():
        msg = f"{path}: no such inventory file or directory"
        raise InventoryError(msg)
    candidates = sorted(p for p in path.glob("*.py") if p.name != "__init__.py")
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        msg = f"{path}: no inventory file (*.py) in this directory"
    else:
        names = ", ".join(p.name for p in candidates)
        msg = f"{path}: several inventory files ({names}); name one"
    raise InventoryError(msg)


def compile_policy(inventory_path: str) -> str:
    """The policy file for a pyinfra inventory (and its ``group_data/``): the inventory file,
    or the directory that holds it."""
    try:
        with warnings.catch_warnings():
            # pyinfra's command line patches the standard library for gevent on import; we
            # only read an inventory, with no connection made
            warnings.simplefilter("ignore")
            from pyinfra.api import Config, State  # noqa: PLC0415
            from pyinfra.context import ctx_config, ctx_state  # noqa: PLC0415
            from pyinfra_cli.inventory import make_inventory  # noqa: PLC0415
        import tomli_w  # noqa: F401, PLC0415  (policy_text's writer, from the same extra)
    except ImportError as exc:
        msg = "compiling an inventory needs pyinfra: pip install 'fleetwatch[deploy]'"
        raise InventoryError(msg) from exc
    path = inventory_file(Path(inventory_path))
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
