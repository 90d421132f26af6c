"""Every host: where agents report, and the baseline of the whole fleet."""

import os
from pathlib import Path

# Deploy settings
fleetwatch_collector_url = "https://fleetwatch-01.ops.example.org:8470"
fleetwatch_interval = 300

# Secrets never live in this repository. `fleetwatch bootstrap DIR --name
# fleetwatch-01.ops.example.org` makes them (docs/deploy.md); they are read from DIR, named by
# FLEETWATCH_BOOTSTRAP_DIR (fleet-secrets/ beside inventory/ by default). The environment
# variables FLEETWATCH_ENROLL_SECRET, FLEETWATCH_ADMIN_TOKEN and FLEETWATCH_CA_CERT (a file
# name), when set, take precedence. Names with two leading underscores are not group data.
__made = Path(
    os.environ.get("FLEETWATCH_BOOTSTRAP_DIR")
    or Path(__file__).resolve().parent.parent.parent / "fleet-secrets"
)
__ca = Path(os.environ.get("FLEETWATCH_CA_CERT") or __made / "ca.crt")
fleetwatch_enroll_secret = os.environ.get("FLEETWATCH_ENROLL_SECRET") or (
    (__made / "enroll-secret").read_text().strip() if (__made / "enroll-secret").is_file() else None
)
fleetwatch_admin_token = os.environ.get("FLEETWATCH_ADMIN_TOKEN") or (
    (__made / "admin-token").read_text().strip() if (__made / "admin-token").is_file() else None
)
fleetwatch_ca_cert = __ca.read_text() if __ca.is_file() else None

# Baseline
fleetwatch_allowed_ports = ["tcp/22"]
fleetwatch_ignore_loopback = True
fleetwatch_max_pending_security_updates = 0
fleetwatch_security_update_grace_days = 7
fleetwatch_max_index_age_days = 7
fleetwatch_reboot_grace_days = 14
fleetwatch_max_disk_percent = 90
fleetwatch_max_report_age = 900
fleetwatch_forbidden_packages = ["telnetd", "rsh-server", "nis"]
fleetwatch_forbidden_services = ["telnet", "rsh", "tftpd-hpa"]
fleetwatch_required_services = ["ssh"]
fleetwatch_checks = [{"name": "ssh", "type": "tcp", "port": 22}]

# The response to findings: days to rectify by severity, when a fix counts as verified, and
# how long before a waiver ends its owner is told
fleetwatch_due_days = {"critical": 2, "high": 7, "medium": 30, "low": 90}
fleetwatch_verification = {"reports": 3, "hours": 24}
fleetwatch_waiver_warning_days = 7
