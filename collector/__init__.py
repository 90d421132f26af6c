"""fleetwatch collector: receives agent reports, holds each host against its baseline."""
