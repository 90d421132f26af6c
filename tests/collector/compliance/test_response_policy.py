"""The policy's response tables: units, due days, verification, waivers (and their errors)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fleetwatch.collector.compliance.policy import Policy, PolicyError
from fleetwatch.collector.compliance.response import Verification, waiver_covers

WAIVER = """
[waivers.vendor]
host = "web-01"
rule = "allowed_ports"
subject = "tcp/8081"
reason = "vendor appliance"
owner = "parks IT"
"""


class TestUnits:
    def test_a_declared_unit_keeps_its_contacts_and_a_named_one_has_none(self) -> None:
        """[units.NAME] gives title, e-mails, targets and digest; a unit only named on a
        host is a unit too, titled by its name."""
        policy = Policy.from_text(
            '[units.parks]\ntitle = "Parks"\nemails = ["it@parks.example.org"]\n'
            'targets = ["hook"]\ndigest = "daily"\n'
            '[hosts."w"]\nunit = "parks"\n[hosts."x"]\nunit = "water"\n'
        )
        parks, water = policy.units["parks"], policy.units["water"]
        assert (parks.title, parks.emails, parks.targets, parks.digest) == (
            "Parks",
            ["it@parks.example.org"],
            ["hook"],
            "daily",
        )
        assert (water.title, water.emails, water.digest) == ("water", [], "immediate")
        assert policy.declared_units == {"parks"}
        assert policy.hosts_of_unit("parks") == ["w"]

    def test_a_bad_email_is_an_error_naming_the_unit(self) -> None:
        """The message names the table and the key."""
        with pytest.raises(PolicyError, match=r'\[units."parks"\] emails\[0\]: .*not an e-mail'):
            Policy.from_text('[units.parks]\nemails = ["nobody"]\n')


class TestWaivers:
    def test_a_waiver_without_expiry_is_an_error_naming_it(self) -> None:
        """Expiry is mandatory for a waiver in the file too."""
        with pytest.raises(PolicyError, match=r'\[waivers."vendor"\] expires: Field required'):
            Policy.from_text(WAIVER)

    def test_a_date_expires_at_midnight_utc(self) -> None:
        """A TOML date: 00:00 UTC that day; a local date-time is taken as UTC."""
        policy = Policy.from_text(WAIVER + "expires = 2027-01-31\n")
        assert policy.waivers["vendor"].expires_at == datetime(2027, 1, 31, tzinfo=UTC)
        policy = Policy.from_text(WAIVER + "expires = 2027-01-31T12:00:00\n")
        assert policy.waivers["vendor"].expires_at == datetime(2027, 1, 31, 12, tzinfo=UTC)

    def test_a_waiver_names_exactly_one_scope_a_known_rule_and_group(self) -> None:
        """Two scopes, an unknown rule or an unknown group: each an error naming the waiver."""
        both = WAIVER.replace('host = "web-01"', 'host = "web-01"\nunit = "parks"')
        with pytest.raises(PolicyError, match="exactly one of host, unit or group"):
            Policy.from_text(both + "expires = 2027-01-31\n")
        with pytest.raises(PolicyError, match=r'\[waivers."vendor"\] rule: .*no rule'):
            Policy.from_text(WAIVER.replace("allowed_ports", "nope") + "expires = 2027-01-31\n")
        group = WAIVER.replace('host = "web-01"', 'group = "db"')
        with pytest.raises(PolicyError, match=r"no table \[groups.db\]"):
            Policy.from_text(group + "expires = 2027-01-31\n")

    @pytest.mark.parametrize(
        ("pattern", "key", "covered"),
        [
            ("tcp/8081", "tcp/8081", True),
            ("tcp/80*", "tcp/8081", True),
            ("CVE-2024-*", "CVE-2024-1234", True),
            ("CVE-2024-*", "CVE-2023-1234", False),
            ("openssl*", "openssl", True),
            ("tcp/8081", "TCP/8081", False),
        ],
    )
    def test_subjects_match_fnmatch_style_case_sensitively(
        self, pattern: str, key: str, covered: bool
    ) -> None:
        """Patterns are shell-style (fnmatchcase): `*`, `?`, `[...]`."""
        assert (
            waiver_covers(
                "host",
                "h",
                "r",
                pattern,
                host_id="h",
                unit=None,
                groups=(),
                finding_rule="r",
                key=key,
            )
            is covered
        )


class TestDueAndVerification:
    def test_due_days_give_a_due_date_by_severity(self) -> None:
        """A severity left out of [due_days] has no due date."""
        policy = Policy.from_text("[due_days]\ncritical = 2\nhigh = 7\n")
        opened = datetime(2026, 11, 1, tzinfo=UTC)
        assert policy.response.due_days.due("critical", opened) == opened + timedelta(days=2)
        assert policy.response.due_days.due("low", opened) is None

    def test_a_fix_is_verified_by_reports_or_by_time_whichever_first(self) -> None:
        """reports = 3, hours = 24: three clean reports, or a day without it coming back."""
        verification = Verification(reports=3, hours=24)
        resolved = datetime(2026, 11, 1, tzinfo=UTC)
        assert not verification.held(2, resolved, resolved + timedelta(hours=1))
        assert verification.held(3, resolved, resolved + timedelta(hours=1))
        assert verification.held(1, resolved, resolved + timedelta(hours=24))

    def test_verification_needs_reports_or_hours(self) -> None:
        """Both at 0 would verify nothing: an error."""
        with pytest.raises(PolicyError, match=r"\[verification\].*set reports or hours"):
            Policy.from_text("[verification]\nreports = 0\n")
