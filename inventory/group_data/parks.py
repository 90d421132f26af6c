"""The hosts the parks unit answers for."""

fleetwatch_unit = "parks"
