"""fleetwatch's pyinfra deploys: roll the agent and the collector out across a fleet.

Call them from your own deploys::

    from deploy.deploys import install_agent
    install_agent()

or run the entry files: ``pyinfra INVENTORY deploy/agent.py`` (and ``collector.py``,
``remove_agent.py``). Settings come from host and group data keys prefixed ``fleetwatch_``;
see docs/deploy.md.
"""
