"""fleetwatch host agent: collects a host's compliance facts and reports them to the collector."""
