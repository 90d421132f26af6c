"""The hosts the water unit answers for."""

fleetwatch_unit = "water"
