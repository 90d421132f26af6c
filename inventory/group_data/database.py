"""Database servers: PostgreSQL on its port, and running."""

fleetwatch_allowed_ports = ["tcp/22", "tcp/5432"]
fleetwatch_required_services = ["ssh", "postgresql"]
fleetwatch_checks = [
    {"name": "ssh", "type": "tcp", "port": 22},
    {"name": "postgresql", "type": "tcp", "port": 5432},
]
