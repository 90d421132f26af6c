"""fleetwatch: a fleet compliance monitor.

This package holds what the agent and the collector share: the wire contract
(`fleetwatch.schema`), Debian version order (`fleetwatch.debversion`), logging set-up
(`fleetwatch.logs`), the process supervisor (`fleetwatch.supervise`) and the collector's URL
and sessions as both its API clients use them (`fleetwatch.endpoint`). The host agent is
`fleetwatch.agent`, the collector `fleetwatch.collector`, the pyinfra deploys
`fleetwatch.deploy`; docs/architecture.md draws the layers.
"""

__version__ = "0.1.0"
