"""Install or upgrade the fleetwatch agent on every host of the inventory:

    pyinfra INVENTORY deploy/agent.py

Roll out in batches with ``--limit`` (a group, or host name globs) and ``--parallel``.
"""

from deploy.deploys import install_agent

install_agent()
