"""The hosts the ops unit answers for."""

fleetwatch_unit = "ops"
