"""Each rule, on facts built from captured reports."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from fleetwatch.collector.compliance.policy import Baseline
from fleetwatch.collector.compliance.rules import Memo, evaluate
from fleetwatch.collector.vulns.matching import Match
from tests.collector.compliance.fakes import NOW, Facts
from tests.helpers import section_data


def listeners(*items: tuple[str, str, int]) -> dict[str, Any]:
    return {
        "listeners": [
            {"protocol": p, "address": a, "port": n, "pid": 7, "process": "nc", "user": "nobody"}
            for p, a, n in items
        ]
    }


def keys(baseline: Baseline, facts: Facts, rule: str | None = None) -> set[str]:
    return {f.key for f in evaluate(baseline, facts).findings if rule is None or f.rule == rule}


class TestAllowedPorts:
    def test_unlisted_port_on_a_public_address_is_a_finding(self) -> None:
        facts = Facts(
            {
                "ports": listeners(
                    ("tcp", "0.0.0.0", 22),
                    ("tcp", "0.0.0.0", 8080),
                    ("tcp", "::", 8080),
                    ("udp", "10.0.0.5", 161),
                )
            }
        )
        result = evaluate(Baseline(allowed_ports=["tcp/22"]), facts)
        assert {f.key for f in result.findings} == {"tcp/8080", "udp/161"}
        detail = next(f.detail for f in result.findings if f.key == "tcp/8080")
        assert "0.0.0.0, ::" in detail
        assert "nc pid 7 user nobody" in detail
        assert all(f.severity == "high" for f in result.findings)

    def test_loopback_is_ignored_unless_asked(self) -> None:
        facts = Facts(
            {
                "ports": listeners(
                    ("tcp", "127.0.0.1", 5432),
                    ("tcp", "::1", 6379),
                    ("tcp", "::ffff:127.0.0.1", 9000),
                )
            }
        )
        assert keys(Baseline(allowed_ports=["tcp/22"]), facts) == set()
        strict = Baseline(allowed_ports=["tcp/22"], ignore_loopback=False)
        assert keys(strict, facts) == {"tcp/5432", "tcp/6379", "tcp/9000"}

    def test_detail_names_the_user_when_the_process_is_unknown(self) -> None:
        """An agent without capabilities knows the socket's user: the finding says it."""
        ports = listeners(("udp", "0.0.0.0", 161), ("tcp", "0.0.0.0", 8080))
        ports["listeners"][0].update(pid=None, process=None, user="snmp")
        ports["listeners"][1].update(pid=None, process=None, user=None)
        result = evaluate(Baseline(allowed_ports=["tcp/22"]), Facts({"ports": ports}))
        details = {f.key: f.detail for f in result.findings}
        assert "(process unknown user snmp)" in details["udp/161"]
        assert "(process unknown)" in details["tcp/8080"]

    def test_ranges(self) -> None:
        facts = Facts({"ports": listeners(("tcp", "0.0.0.0", 8050))})
        assert keys(Baseline(allowed_ports=["tcp/8000-8100"]), facts) == set()

    def test_unset_rule_checks_nothing(self) -> None:
        facts = Facts({"ports": listeners(("tcp", "0.0.0.0", 8080))})
        assert keys(Baseline(), facts) == set()


def services(**states: tuple[str, str | None]) -> dict[str, Any]:
    return {
        "manager": "systemd",
        "available": True,
        "units": [
            {"name": name, "load": "loaded", "active": active, "sub": active, "enabled": enabled}
            for name, (active, enabled) in states.items()
        ],
    }


class TestServices:
    def test_required_service_down_or_missing(self) -> None:
        facts = Facts(
            {
                "services": services(
                    **{"nginx.service": ("failed", "enabled"), "ssh.service": ("active", "enabled")}
                )
            }
        )
        result = evaluate(Baseline(required_services=["nginx", "ssh.service", "cron"]), facts)
        details = {f.key: f.detail for f in result.findings}
        assert set(details) == {"nginx", "cron"}
        assert details["nginx"] == "nginx.service is required but failed"
        assert details["cron"] == "cron is required but not installed"

    def test_required_service_without_systemd_cannot_be_verified(self) -> None:
        """No systemd means a required service is not shown to run: a finding that says why."""
        facts = Facts(
            {"services": {"available": False, "reason": "systemd is not the init system"}}
        )
        (finding,) = evaluate(Baseline(required_services=["nginx"]), facts).findings
        assert finding.detail == "nginx cannot be verified: systemd is not the init system"

    def test_forbidden_service_active_or_enabled(self) -> None:
        facts = Facts(
            {
                "services": services(
                    **{
                        "telnet.service": ("inactive", "enabled"),
                        "rsh.service": ("active", "disabled"),
                        "tftpd-hpa.service": ("inactive", "disabled"),
                    }
                )
            }
        )
        assert keys(Baseline(forbidden_services=["telnet", "rsh*", "tftpd-hpa"]), facts) == {
            "telnet.service",
            "rsh.service",
        }


class TestPackages:
    def test_forbidden_packages_by_pattern(self) -> None:
        facts = Facts({"packages": section_data("packages")})
        found = keys(Baseline(forbidden_packages=["openssl", "libssl*"]), facts)
        assert {"openssl", "libssl3"} <= found

    def test_min_versions_in_dpkg_order(self) -> None:
        data = section_data("packages")
        openssl = next(p for p in data["packages"] if p[0] == "openssl")
        installed = openssl[1]
        facts = Facts({"packages": data})
        higher = installed + "+fix1"
        assert keys(Baseline(min_versions={"openssl": higher}), facts) == {"openssl"}
        assert keys(Baseline(min_versions={"openssl": installed}), facts) == set()
        assert keys(Baseline(min_versions={"openssl": "1:0"}), facts) == {"openssl"}  # epoch
        assert keys(Baseline(min_versions={"not-installed": "9"}), facts) == set()

    def test_time_independent_rules_are_memoised(self) -> None:
        """A package list seen before is not decoded again for the same baseline."""
        memo = Memo()
        baseline = Baseline(forbidden_packages=["openssl"])
        first = Facts({"packages": section_data("packages")})
        evaluate(baseline, first, memo, "digest-1")
        second = Facts({"packages": section_data("packages")})
        result = evaluate(baseline, second, memo, "digest-1")
        assert "packages" not in second.loads
        assert {f.key for f in result.findings} == {"openssl"}

    def test_memo_is_shared_by_baselines_that_differ_only_in_other_rules_keys(self) -> None:
        """A rule's memo follows the keys of its own settings: a baseline that changes
        another rule's keys reuses it, one that changes the rule's own keys does not."""
        memo = Memo()
        packages = section_data("packages")
        evaluate(Baseline(forbidden_packages=["openssl"]), Facts({"packages": packages}), memo, "a")
        other_ports = Facts({"packages": packages})
        ported = Baseline(forbidden_packages=["openssl"], allowed_ports=["tcp/22"])
        result = evaluate(ported, other_ports, memo, "b")
        assert "packages" not in other_ports.loads
        assert {f.key for f in result.findings} == {"openssl"}
        other_list = Facts({"packages": packages})
        result = evaluate(Baseline(forbidden_packages=["open*"]), other_list, memo, "c")
        assert "packages" in other_list.loads
        assert "openssl" in {f.key for f in result.findings}
        raised = Facts({"packages": packages})
        severe = Baseline(forbidden_packages=["openssl"], severity={"forbidden_packages": "low"})
        result = evaluate(severe, raised, memo, "d")
        assert "packages" in raised.loads  # the severity a finding carries is the rule's too
        assert {f.severity for f in result.findings} == {"low"}


def vuln(source: str, **fields: Any) -> Match:
    """A vulnerability of a source package, as matching would give it."""
    values: dict[str, Any] = {
        "vuln": "CVE-2024-0001",
        "source": source,
        "release": "bookworm",
        "installed_version": "1.0",
        "fixed_version": "1.1",
        "status": "resolved",
        "severity": "high",
        "urgency": "high",
        "cvss": None,
        "fixable": False,
        "exploited": False,
        "flags": (),
        "advisories": (),
        "fix_since": None,
        "binaries": (source,),
    }
    values.update(fields)
    return Match(**values)


def updates(*items: tuple[str, bool]) -> dict[str, Any]:
    return {
        "manager": "apt",
        "index_refreshed_at": NOW.isoformat(),
        "updates": [
            {
                "name": name,
                "architecture": "amd64",
                "installed_version": "1.0",
                "candidate_version": "1.1",
                "security": security,
            }
            for name, security in items
        ],
    }


SOURCES = {"libssl3": "openssl", "libc6": "glibc"}


def installed(*names: str) -> dict[str, Any]:
    """A packages section of these binaries, from their sources in SOURCES (else their own)."""
    return {
        "manager": "dpkg",
        "packages": [[n, "1.0", "amd64", SOURCES.get(n, n), "1.0"] for n in names],
    }


class TestSecurityUpdates:
    def test_grace_period_counts_from_first_seen(self) -> None:
        """A security update counts only once pending longer than the grace period."""
        since = {
            ("security_update", "openssl"): NOW - timedelta(days=9),
            ("security_update", "curl"): NOW - timedelta(days=2),
        }
        facts = Facts(
            {
                "updates": updates(("openssl", True), ("curl", True), ("vim", False)),
                "packages": installed("openssl", "curl", "vim"),
            },
            since=since,
        )
        baseline = Baseline(max_pending_security_updates=0, security_update_grace_days=7)
        result = evaluate(baseline, facts)
        assert {f.key for f in result.findings} == {"openssl"}
        assert "pending for 9.0 days" in result.findings[0].detail

    def test_allowed_number_of_pending_updates(self) -> None:
        facts = Facts(
            {"updates": updates(("a", True), ("b", True)), "packages": installed("a", "b")}
        )
        assert keys(Baseline(max_pending_security_updates=2), facts) == set()
        assert keys(Baseline(max_pending_security_updates=1), facts) == {"a", "b"}

    def test_non_security_updates_never_count(self) -> None:
        facts = Facts({"updates": updates(("tzdata", False)), "packages": installed("tzdata")})
        assert keys(Baseline(max_pending_security_updates=0), facts) == set()

    def test_one_finding_per_package_across_architectures(self) -> None:
        data = updates(("libc6", True))
        data["updates"].append({**data["updates"][0], "architecture": "i386"})
        facts = Facts({"updates": data, "packages": installed("libc6")})
        assert keys(Baseline(max_pending_security_updates=0), facts) == {"glibc"}

    def test_one_finding_per_source_package(self) -> None:
        """openssl and libssl3 come from one source: one finding names both."""
        facts = Facts(
            {
                "updates": updates(("openssl", True), ("libssl3", True)),
                "packages": installed("openssl", "libssl3"),
            }
        )
        (finding,) = evaluate(Baseline(max_pending_security_updates=0), facts).findings
        assert finding.key == "openssl"
        assert "2 packages (libssl3, openssl)" in finding.detail

    def test_a_fix_published_long_ago_counts_at_once(self) -> None:
        """With vulnerability data dating the fix, the grace counts from its advisory, not from
        when a new collector first saw the update pending."""
        advisory = NOW - timedelta(days=30)
        facts = Facts(
            {"updates": updates(("openssl", True)), "packages": installed("openssl")},
            vulnerabilities=[vuln("openssl", fixable=True, fix_since=advisory)],
        )
        baseline = Baseline(max_pending_security_updates=0, security_update_grace_days=7)
        (finding,) = evaluate(baseline, facts).findings
        assert "pending for 30 days" in finding.detail
        undated = Facts(
            {"updates": updates(("openssl", True)), "packages": installed("openssl")},
            vulnerabilities=[vuln("openssl", fixable=True, fix_since=None)],
        )
        (finding,) = evaluate(baseline, undated).findings
        assert "published before the vulnerability data was first imported" in finding.detail
        without_data = Facts(
            {"updates": updates(("openssl", True)), "packages": installed("openssl")}
        )
        assert evaluate(baseline, without_data).findings == []

    def test_held_and_kept_back_security_fixes_count_and_say_why(self) -> None:
        """A held or kept-back package with a security fix is a finding naming the reason."""
        data = updates(("passwd", True), ("libfwtwin", True), ("libnghttp2-14", True))
        data["updates"][0].update(held_back="held", reason="on hold (apt-mark hold)")
        data["updates"][1].update(held_back="kept-back", reason="kept back: \x1b[2Jtwin")
        data["updates"][2].update(candidate_version="1.1+u2", security_version="1.1+u1")
        packages = installed("passwd", "libfwtwin", "libnghttp2-14")
        facts = Facts({"updates": data, "packages": packages})
        result = evaluate(Baseline(max_pending_security_updates=0), facts)
        details = {f.key: f.detail for f in result.findings}
        assert set(details) == {"passwd", "libfwtwin", "libnghttp2-14"}
        assert "(passwd held: on hold (apt-mark hold))" in details["passwd"]
        assert "libfwtwin kept-back: kept back:" in details["libfwtwin"]
        assert "(libnghttp2-14: security fix 1.1+u1)" in details["libnghttp2-14"]

    def test_new_installs_are_not_pending_updates(self) -> None:
        """An upgrade's new package (no installed version) is no pending security update."""
        data = updates(("linux-image-6.1.0-57-amd64", True), ("libc6", True))
        data["updates"][0]["installed_version"] = None
        baseline = Baseline(max_pending_security_updates=0)
        facts = Facts({"updates": data, "packages": installed("libc6")})
        assert keys(baseline, facts) == {"glibc"}
        data["new_installs"] = [data["updates"].pop(0)]
        facts = Facts({"updates": data, "packages": installed("libc6")})
        assert keys(baseline, facts) == {"glibc"}

    def test_stale_package_index(self) -> None:
        data = updates()
        data["index_refreshed_at"] = (NOW - timedelta(days=30)).isoformat()
        result = evaluate(Baseline(max_index_age_days=7), Facts({"updates": data}))
        assert [f.rule for f in result.findings] == ["index_age"]
        assert "30 days old" in result.findings[0].detail


class TestReboot:
    def system(self, **changes: Any) -> dict[str, Any]:
        return section_data("system", **changes)

    def test_reboot_required_past_grace(self) -> None:
        since = NOW - timedelta(days=10)
        facts = Facts(
            {
                "system": self.system(
                    reboot_required=True,
                    reboot_required_since=since.isoformat(),
                    reboot_required_packages=["linux-image-6.1.0-56-amd64"],
                )
            }
        )
        (finding,) = evaluate(Baseline(reboot_grace_days=7), facts).findings
        assert finding.rule == "reboot_required"
        assert "linux-image-6.1.0-56-amd64" in finding.detail
        assert keys(Baseline(reboot_grace_days=14), facts) == set()

    def test_outdated_kernel_counts_from_first_seen(self) -> None:
        facts = Facts(
            {"system": self.system(kernel_outdated=True, kernel_latest_installed="6.1.0-56-amd64")},
            since={("reboot_required", ""): NOW - timedelta(days=3)},
        )
        assert keys(Baseline(reboot_grace_days=2), facts) == {"reboot"}
        assert keys(Baseline(reboot_grace_days=4), facts) == set()


class TestDiskChecksErrors:
    def test_disk_over_limit(self) -> None:
        data = section_data("resources")
        data["mounts"] = [
            {
                "mountpoint": "/var",
                "device": "/dev/vdb",
                "fstype": "ext4",
                "total_bytes": 100,
                "used_bytes": 95,
                "percent": 95.0,
            }
        ]
        assert keys(Baseline(max_disk_percent=90), Facts({"resources": data})) == {"/var"}

    def test_failing_checks(self) -> None:
        data = {
            "results": [
                {
                    "name": "site",
                    "kind": "http",
                    "target": "http://x/",
                    "ok": False,
                    "reason": "HTTP status 503",
                },
                {"name": "ssh", "kind": "tcp", "target": "127.0.0.1:22", "ok": True},
            ]
        }
        (finding,) = evaluate(Baseline(), Facts({"checks": data})).findings
        assert (finding.rule, finding.key) == ("failing_checks", "site")
        assert "HTTP status 503" in finding.detail

    def test_collection_errors_are_findings(self) -> None:
        facts = Facts(errors={"updates": "apt-get failed: E: lock"})
        (finding,) = evaluate(Baseline(), facts).findings
        assert (finding.rule, finding.key, finding.severity) == (
            "collection_errors",
            "updates",
            "low",
        )

    def test_unknown_section_makes_its_rules_undetermined(self) -> None:
        """A rule whose section is unknown neither finds nor clears anything."""
        result = evaluate(
            Baseline(allowed_ports=["tcp/22"], max_pending_security_updates=0), Facts()
        )
        assert result.findings == []
        assert result.undetermined == {"allowed_ports", "security_updates", "failing_checks"}


@pytest.mark.parametrize("rule", ["disk_usage", "allowed_ports"])
def test_severity_override(rule: str) -> None:
    data = section_data("resources")
    data["mounts"] = [
        {
            "mountpoint": "/",
            "device": "/dev/vda",
            "fstype": "ext4",
            "total_bytes": 100,
            "used_bytes": 99,
            "percent": 99.0,
        }
    ]
    facts = Facts({"resources": data, "ports": listeners(("tcp", "0.0.0.0", 1))})
    baseline = Baseline(max_disk_percent=90, allowed_ports=[], severity={rule: "critical"})
    severities = {f.rule: f.severity for f in evaluate(baseline, facts).findings}
    assert severities[rule] == "critical"
