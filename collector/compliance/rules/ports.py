"""Rules on open ports: nothing listens outside the allowed ports."""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from typing import TYPE_CHECKING

from fleetwatch.collector.compliance.rules.registry import rule

if TYPE_CHECKING:
    from fleetwatch.collector.compliance.rules.registry import Finding, RuleInput
    from fleetwatch.schema import Listener


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _who(listener: Listener) -> str:
    if listener.process is None:
        return "process unknown"
    parts = [listener.process]
    if listener.pid is not None:
        parts.append(f"pid {listener.pid}")
    if listener.user:
        parts.append(f"user {listener.user}")
    return " ".join(parts)


@rule(
    "allowed_ports",
    severity="high",
    sections=("ports",),
    on=lambda baseline: baseline.allowed_ports is not None,
)
def allowed_ports(host: RuleInput) -> list[Finding]:
    """A finding per protocol/port listening on a non-loopback address and not allowed."""
    baseline = host.baseline
    ranges = baseline.port_ranges
    offending: dict[tuple[str, int], list[Listener]] = defaultdict(list)
    for listener in host.ports.listeners:
        if baseline.ignore_loopback and _is_loopback(listener.address):
            continue
        if any(r.matches(listener.protocol, listener.port) for r in ranges):
            continue
        offending[(listener.protocol, listener.port)].append(listener)
    allowed = ", ".join(baseline.allowed_ports or ()) or "none"
    findings = []
    for (protocol, port), listeners in sorted(offending.items()):
        addresses = ", ".join(sorted({x.address for x in listeners}))
        who = "; ".join(sorted({_who(x) for x in listeners}))
        findings.append(
            host.finding(
                f"{protocol}/{port}",
                f"{protocol}/{port} is listening on {addresses} ({who}); allowed: {allowed}",
            )
        )
    return findings
