"""The ``@deploy`` functions: install and remove the agent, install the collector."""

from fleetwatch.deploy.deploys.agent import install_agent, remove_agent
from fleetwatch.deploy.deploys.collector import install_collector

__all__ = ["install_agent", "install_collector", "remove_agent"]
