"""Web servers: HTTP and HTTPS open, nginx running, the site answering."""

fleetwatch_allowed_ports = ["tcp/22", "tcp/80", "tcp/443"]
fleetwatch_required_services = ["ssh", "nginx"]
fleetwatch_checks = [
    {"name": "ssh", "type": "tcp", "port": 22},
    {"name": "site", "type": "http", "url": "http://127.0.0.1/", "timeout": 5},
]
