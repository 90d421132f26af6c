"""Bastions: SSH only, and rebooted promptly after kernel updates."""

fleetwatch_reboot_grace_days = 3
fleetwatch_forbidden_packages = ["telnetd", "rsh-server", "nis", "netcat-traditional"]
