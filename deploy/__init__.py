"""fleetwatch's pyinfra deploys: roll the agent and the collector out across a fleet.

Call them from your own deploys::

    from fleetwatch.deploy import install_agent
    install_agent()

or run the recipes in this repository: ``pyinfra INVENTORY deploy/recipes/install_agent.py``
(and ``install_collector.py``, ``remove_agent.py``). Settings come from host and group data
keys prefixed ``fleetwatch_``; see docs/deploy.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleetwatch.deploy.deploys import install_agent, install_collector, remove_agent

__all__ = ["install_agent", "install_collector", "remove_agent"]


def __getattr__(name: str) -> Any:
    # The deploys import pyinfra's operations; `fleetwatch.deploy.baseline` alone (policy
    # compile) should not, so they are loaded when first asked for.
    if name in __all__:
        from fleetwatch.deploy import deploys  # noqa: PLC0415

        return getattr(deploys, name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
