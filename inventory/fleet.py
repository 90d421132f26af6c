"""An example fleet: three units (organisations answerable for their own hosts) and the roles
their hosts play. Group data in group_data/ carries both the deploy settings and the compliance
baseline; `fleetwatch policy compile inventory/` shows what each host is held to.

    pyinfra inventory/fleet.py deploy/recipes/install_collector.py --limit fleetwatch_collectors
    pyinfra inventory/fleet.py deploy/recipes/install_agent.py
"""

# Roles
web = [
    "web-01.parks.example.org",
    "web-02.parks.example.org",
    "web-01.water.example.org",
]
database = [
    "db-01.parks.example.org",
    ("db-01.water.example.org", {"fleetwatch_max_disk_percent": 95}),
]
bastion = ["bastion-01.ops.example.org"]
fleetwatch_collectors = ["fleetwatch-01.ops.example.org"]

# Units
parks = ["web-01.parks.example.org", "web-02.parks.example.org", "db-01.parks.example.org"]
water = ["web-01.water.example.org", "db-01.water.example.org"]
ops = ["bastion-01.ops.example.org", "fleetwatch-01.ops.example.org"]
