"""Install or upgrade the fleetwatch agent on every host of the inventory:

    pyinfra INVENTORY deploy/recipes/install_agent.py

Roll out in batches with ``--limit`` (a group, or host name globs) and ``--parallel``.
"""

from fleetwatch.deploy import install_agent

install_agent()
