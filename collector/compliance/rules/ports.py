"""Rules on open ports: nothing listens outside the allowed ports."""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, BaseModel, Field

from fleetwatch.collector.compliance.rules.registry import rule

if TYPE_CHECKING:
    from fleetwatch.collector.compliance.rules.registry import Finding, RuleInput
    from fleetwatch.schema import Listener


@dataclass(frozen=True)
class PortRange:
    """A port or a range of ports of one protocol, as the policy allows them."""

    protocol: str
    low: int
    high: int

    def matches(self, protocol: str, port: int) -> bool:
        return self.protocol == protocol and self.low <= port <= self.high


def parse_port_spec(spec: str) -> PortRange:
    """``tcp/22``, ``udp/123`` or a range ``tcp/8000-8100``."""
    protocol, sep, ports = spec.strip().lower().partition("/")
    if not sep or protocol not in {"tcp", "udp"}:
        msg = f"{spec!r} is not a port: write tcp/PORT, udp/PORT or tcp/LOW-HIGH"
        raise ValueError(msg)
    low_text, _, high_text = ports.partition("-")
    try:
        low = int(low_text)
        high = int(high_text) if high_text else low
    except ValueError:
        msg = f"{spec!r} is not a port: write tcp/PORT, udp/PORT or tcp/LOW-HIGH"
        raise ValueError(msg) from None
    if not 0 <= low <= high <= 65535:
        msg = f"{spec!r}: ports run from 0 to 65535, low to high"
        raise ValueError(msg)
    return PortRange(protocol, low, high)


def _port_spec(value: str) -> str:
    parsed = parse_port_spec(value)
    suffix = str(parsed.low) if parsed.low == parsed.high else f"{parsed.low}-{parsed.high}"
    return f"{parsed.protocol}/{suffix}"


PortSpec = Annotated[str, AfterValidator(_port_spec)]


class PortsSettings(BaseModel):
    """The policy keys of these rules (part of every baseline: see `compliance.policy`)."""

    allowed_ports: list[PortSpec] | None = Field(
        default=None,
        description="Ports that may listen on non-loopback addresses; anything else is a "
        "finding. Unset: ports are not checked.",
    )
    ignore_loopback: bool = Field(
        default=True, description="Listeners on loopback addresses are not checked."
    )

    @property
    def port_ranges(self) -> list[PortRange]:
        return [parse_port_spec(s) for s in self.allowed_ports or []]


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _who(listener: Listener) -> str:
    """Process, pid and user as far as the agent knows them (the user even without a process)."""
    parts = [listener.process or "process unknown"]
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
