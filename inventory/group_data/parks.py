"""The hosts the parks unit answers for."""

fleetwatch_unit = "parks"
# Who answers for these hosts, and how they are told (notification targets by name)
fleetwatch_unit_contacts = {
    "title": "Parks and Gardens",
    "emails": ["it@parks.example.org"],
    "digest": "daily",
}
