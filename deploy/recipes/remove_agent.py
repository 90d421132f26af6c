"""Remove the fleetwatch agent and everything it installed:

pyinfra INVENTORY deploy/recipes/remove_agent.py
"""

from fleetwatch.deploy import remove_agent

remove_agent()
