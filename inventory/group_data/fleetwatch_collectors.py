"""The collector: its port open too, and its certificate from `fleetwatch bootstrap`."""

import os
from pathlib import Path

fleetwatch_allowed_ports = ["tcp/22", "tcp/8470"]
fleetwatch_collector_workers = 2

# collector.crt and collector.key from the directory all.py reads (FLEETWATCH_BOOTSTRAP_DIR)
__made = Path(
    os.environ.get("FLEETWATCH_BOOTSTRAP_DIR")
    or Path(__file__).resolve().parent.parent.parent / "fleet-secrets"
)
fleetwatch_tls_cert = (
    (__made / "collector.crt").read_text() if (__made / "collector.crt").is_file() else None
)
fleetwatch_tls_key = (
    (__made / "collector.key").read_text() if (__made / "collector.key").is_file() else None
)
