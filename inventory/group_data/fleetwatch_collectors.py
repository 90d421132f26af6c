"""The collector: its port open too."""

fleetwatch_allowed_ports = ["tcp/22", "tcp/8470"]
fleetwatch_collector_workers = 2
