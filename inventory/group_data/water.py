"""The hosts the water unit answers for."""

fleetwatch_unit = "water"
fleetwatch_unit_contacts = {
    "title": "Water Board",
    "emails": ["noc@water.example.org", "security@water.example.org"],
}
# Exceptions granted by the office, with a reason, an owner and an end
fleetwatch_waivers = {
    "water-telemetry-bridge": {
        "host": "web-01.water.example.org",
        "rule": "allowed_ports",
        "subject": "tcp/8081",
        "reason": "telemetry bridge until the SCADA upgrade",
        "owner": "Water Board operations",
        "expires": "2027-03-31",
    },
}
