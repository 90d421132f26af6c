"""The rule on vulnerabilities: what the data says a host's source packages carry.

One finding per source package, listing its CVEs: openssl, libssl3 and libssl-dev come from
one source and are fixed by one update, so they are one finding, not three. Its severity is
the data's (the worst of the CVEs it lists), not a fixed one.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, Field

from fleetwatch.collector.compliance.rules.registry import SEVERITIES, Finding, rule
from fleetwatch.collector.vulns.model import SEVERITY_RANK

if TYPE_CHECKING:
    from datetime import datetime

    from fleetwatch.collector.compliance.rules.registry import RuleInput, Severity
    from fleetwatch.collector.vulns.matching import Match

MAX_LISTED = 20  # CVEs named in one finding's detail; the API lists them all

Threshold = Literal["none", "low", "medium", "high", "critical"]


class VulnerabilitiesSettings(BaseModel):
    """The policy keys of this rule (part of every baseline: see `compliance.policy`)."""

    max_vulnerability_severity: Threshold | None = Field(
        default=None,
        description="Worst severity a host may carry past the grace period ('none': no "
        "vulnerability at all); an unrated vulnerability counts as medium.",
    )
    vulnerability_grace_days: Annotated[float, Field(ge=0)] = Field(
        default=0.0,
        description="Days a vulnerability may stay after its fix became available (the "
        "advisory's date, else when the collector's data first had the fix); a vulnerability "
        "without a fix counts from when it was first seen on the host.",
    )
    ignore_unimportant: bool = Field(
        default=True,
        description="Leave out what the data calls unimportant (or Ubuntu negligible).",
    )
    fail_on_exploited: bool = Field(
        default=False,
        description="A vulnerability in CISA's Known Exploited catalogue counts at once, "
        "whatever its severity, and makes its finding critical.",
    )


def vulnerability_key(match: Match) -> str:
    """The subject under which a host's first sight of a vulnerability is kept."""
    return f"{match.vuln} {match.source}"


def _counts(host: RuleInput, match: Match, limit: int | None, grace: timedelta) -> bool:
    baseline = host.baseline
    if baseline.ignore_unimportant and "unimportant" in match.flags:
        return False
    if match.exploited and baseline.fail_on_exploited:
        return True
    if limit is None or match.severity_rank <= limit:
        return False
    return host.now - _since(host, match) >= grace


def _since(host: RuleInput, match: Match) -> datetime:
    """Since when the host could have been rid of it."""
    if match.fixed_version is None:
        return host.since("vulnerability", vulnerability_key(match))
    if match.fix_since is None:
        # fixed before the data was first imported: published long ago
        return host.now - timedelta(days=365_000)
    return match.fix_since


def _phrase(match: Match) -> str:
    words = [match.severity or "unrated"]
    if match.cvss is not None:
        words.append(f"CVSS {match.cvss:g}")
    if match.exploited:
        words.append("exploited")
    if match.fixed_version is None:
        words.append("no fix yet")
    else:
        words.append(f"fixed in {match.fixed_version}")
        words.append("fix pending" if match.fixable else "fix not offered")
    words.extend(f for f in match.flags if f != "undetermined")
    if match.advisories:
        words.append(", ".join(match.advisories))
    return f"{match.vuln} ({'; '.join(words)})"


@rule(
    "vulnerabilities",
    severity="high",
    sections=("packages", "system"),
    on=lambda baseline: (
        baseline.max_vulnerability_severity is not None or baseline.fail_on_exploited
    ),
    uses_time=True,
    reads_vulnerabilities=True,
)
def vulnerabilities(host: RuleInput) -> list[Finding]:
    """A finding per source package carrying vulnerabilities past the policy's bounds."""
    baseline = host.baseline
    threshold = baseline.max_vulnerability_severity
    limit = None if threshold is None else SEVERITY_RANK.get(threshold, -1)
    grace = timedelta(days=baseline.vulnerability_grace_days)
    counted: dict[str, list[Match]] = defaultdict(list)
    for match in host.vulnerabilities:
        if _counts(host, match, limit, grace):
            counted[match.source].append(match)
    findings = []
    override = baseline.severity.get("vulnerabilities")
    for source, matches in sorted(counted.items()):
        matches.sort(key=lambda m: (-m.exploited, -m.severity_rank, m.vuln))
        worst: Severity = SEVERITIES[max(m.severity_rank for m in matches)]
        if baseline.fail_on_exploited and any(m.exploited for m in matches):
            worst = "critical"
        installed = matches[0].installed_version
        listed = "; ".join(_phrase(m) for m in matches[:MAX_LISTED])
        more = f"; and {len(matches) - MAX_LISTED} more" if len(matches) > MAX_LISTED else ""
        notes = sorted({m.note for m in matches if m.note})
        detail = (
            f"{source} {installed}: {len(matches)} "
            f"{'vulnerability' if len(matches) == 1 else 'vulnerabilities'}: {listed}{more}"
        )
        if notes:
            detail += f" ({'; '.join(notes)})"
        findings.append(Finding(host.rule.id, source, override or worst, detail))
    return findings
