"""Remove the fleetwatch agent and everything it installed:

pyinfra INVENTORY deploy/remove_agent.py
"""

from deploy.deploys import remove_agent

remove_agent()
