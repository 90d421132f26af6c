"""Install or upgrade the fleetwatch collector on the hosts of the inventory group
``fleetwatch_collectors``, with the policy compiled from this inventory:

    pyinfra INVENTORY deploy/recipes/install_collector.py --limit fleetwatch_collectors
"""

from pyinfra import host

from fleetwatch.deploy import install_collector

if "fleetwatch_collectors" in host.groups:
    install_collector()
