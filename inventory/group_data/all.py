"""Every host: where agents report, and the baseline of the whole fleet."""

import os
from pathlib import Path

# Deploy settings
fleetwatch_collector_url = "https://fleetwatch-01.ops.example.org:8470"
fleetwatch_interval = 300
# Secrets come from the environment of whoever runs pyinfra, never from this repository.
fleetwatch_enroll_secret = os.environ.get("FLEETWATCH_ENROLL_SECRET")
fleetwatch_admin_token = os.environ.get("FLEETWATCH_ADMIN_TOKEN")
# FLEETWATCH_CA_CERT names the file of the CA that signed the collector's certificate.
fleetwatch_ca_cert = (
    Path(os.environ["FLEETWATCH_CA_CERT"]).read_text()
    if os.environ.get("FLEETWATCH_CA_CERT")
    else None
)

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
