"""The policy file: tables, override order, and errors that name the table and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetwatch.collector.compliance.policy import (
    Policy,
    PolicyError,
    PolicySource,
)
from fleetwatch.collector.compliance.rules.ports import parse_port_spec

POLICY = """
[defaults]
allowed_ports = ["tcp/22"]
max_report_age = 600
forbidden_packages = ["telnetd"]

[groups.web]
allowed_ports = ["tcp/22", "tcp/80", "tcp/443"]
required_services = ["nginx"]

[groups.monitored]
allowed_ports = ["tcp/22", "tcp/9100"]

[hosts."web-01"]
unit = "parks"
groups = ["web", "monitored"]

[hosts."web-02"]
unit = "parks"
groups = ["monitored", "web"]
max_report_age = 60
"""


class TestResolution:
    def test_later_tables_override_earlier_ones(self) -> None:
        """defaults < groups in the order the host lists them < the host's own table."""
        policy = Policy.from_text(POLICY)
        web01 = policy.for_host("web-01")
        assert web01.baseline.allowed_ports == ["tcp/22", "tcp/9100"]  # monitored listed last
        assert web01.baseline.required_services == ["nginx"]
        assert web01.baseline.forbidden_packages == ["telnetd"]
        assert web01.baseline.max_report_age == 600
        web02 = policy.for_host("web-02")
        assert web02.baseline.allowed_ports == ["tcp/22", "tcp/80", "tcp/443"]
        assert web02.baseline.max_report_age == 60
        assert (web02.unit, web02.groups) == ("parks", ("monitored", "web"))

    def test_hosts_not_in_the_policy_get_the_defaults(self) -> None:
        other = Policy.from_text(POLICY).for_host("db-09")
        assert other.baseline.allowed_ports == ["tcp/22"]
        assert not other.listed
        assert other.unit is None

    def test_no_policy_checks_nothing(self) -> None:
        baseline = Policy.empty().for_host("x").baseline
        assert baseline.allowed_ports is None
        assert baseline.max_pending_security_updates is None

    def test_digest_differs_between_baselines(self) -> None:
        policy = Policy.from_text(POLICY)
        assert policy.for_host("web-01").digest != policy.for_host("web-02").digest


class TestEvaluationDigest:
    TEXT = """
[defaults]
allowed_ports = ["tcp/22"]

[groups.web]
allowed_ports = ["tcp/22", "tcp/443"]

[hosts."web-01"]
groups = ["web"]
unit = "parks"

[hosts."web-02"]
groups = ["web"]
unit = "parks"

[hosts."web-03"]
groups = ["web"]
unit = "water"

[hosts."web-04"]
groups = ["web"]
unit = "parks"
max_disk_percent = 80
"""

    def test_hosts_of_the_same_groups_share_one_baseline(self) -> None:
        """Hosts listed with groups and no keys of their own are resolved to one baseline."""
        policy = Policy.from_text(self.TEXT)
        one, two = policy.for_host("web-01"), policy.for_host("web-02")
        assert one.baseline is two.baseline
        assert one.evaluation_digest == two.evaluation_digest
        assert policy.for_host("web-04").baseline is not one.baseline
        assert policy.for_host("web-04").baseline.max_disk_percent == 80
        assert policy.for_host("other").baseline is policy.for_host("another").baseline

    def test_unit_and_groups_are_part_of_what_an_evaluation_reads(self) -> None:
        """Two hosts of one baseline in different units are evaluated against different
        things (waivers and events follow the unit); the baseline digest alone is shared."""
        policy = Policy.from_text(self.TEXT)
        parks, water = policy.for_host("web-01"), policy.for_host("web-03")
        assert parks.digest == water.digest
        assert parks.evaluation_digest != water.evaluation_digest

    def test_the_response_policy_is_not(self) -> None:
        """Due days and verification apply as findings open and resolve: changing them
        leaves every host's evaluation digest as it was."""
        before = Policy.from_text(self.TEXT)
        after = Policy.from_text(self.TEXT + "\n[due_days]\nhigh = 3\n")
        assert before.digest != after.digest
        for host_id in ("web-01", "web-03", "web-04", "other"):
            assert (
                before.for_host(host_id).evaluation_digest
                == after.for_host(host_id).evaluation_digest
            )


class TestErrors:
    @pytest.mark.parametrize(
        ("text", "message"),
        [
            (
                '[groups.web]\nalowed_ports = ["tcp/22"]\n',
                '[groups."web"] alowed_ports: unknown key',
            ),
            (
                '[defaults]\nallowed_ports = ["tcp/99999"]\n',
                "[defaults] allowed_ports[0]: Value error, 'tcp/99999': ports run from 0 to 65535",
            ),
            ('[defaults]\nallowed_ports = ["http"]\n', "is not a port"),
            ('[hosts."a"]\ngroups = ["nope"]\n', '[hosts."a"] groups: no table [groups.nope]'),
            ('[defaults]\nmin_versions = { openssl = "" }\n', "[defaults] min_versions.openssl"),
            ("[defaults]\nmax_disk_percent = 120\n", "[defaults] max_disk_percent"),
            ('[hosts."bad host"]\n', "hosts"),
            ("[defaults\n", "not valid TOML"),
        ],
    )
    def test_error_names_table_and_key(self, text: str, message: str) -> None:
        with pytest.raises(PolicyError) as excinfo:
            Policy.from_text(text, "policy.toml")
        assert message in str(excinfo.value)
        assert str(excinfo.value).startswith("policy.toml: ")


class TestLargeHostTables:
    def test_hosts_listed_alike_share_one_entry(self) -> None:
        """Host tables of the same unit and groups are one entry; each host keeps its own."""
        text = POLICY + '[hosts."web-03"]\nunit = "parks"\ngroups = ["web", "monitored"]\n'
        policy = Policy.from_text(text)
        assert policy.hosts["web-01"] is policy.hosts["web-03"]
        assert policy.hosts["web-02"] is not policy.hosts["web-01"]
        assert policy.for_host("web-03").baseline == policy.for_host("web-01").baseline
        assert policy.for_host("web-03").host_id == "web-03"

    def test_equal_values_of_another_type_are_not_shared(self) -> None:
        """A table with ``true`` does not take the entry of one with ``1``."""
        text = "".join(
            f'[hosts."{host}"]\nignore_loopback = {value}\n'
            for host, value in [("a", 1), ("b", "true"), ("c", 1)]
        )
        policy = Policy.from_text(text)
        assert policy.hosts["a"] is policy.hosts["c"]
        assert policy.hosts["b"] is not policy.hosts["a"]

    @pytest.mark.parametrize(
        ("hosts", "message"),
        [
            ('[hosts."b"]\nunit = 1\n', '[hosts."b"] unit: Input should be a valid string'),
            ('[hosts."b"]\ngroups = "web"\n', '[hosts."b"] groups: Input should be a valid list'),
            ('[hosts."b"]\nunit = ""\n', '[hosts."b"] unit: String should have at least 1'),
            ('[hosts."b"]\nunt = "parks"\n', '[hosts."b"] unt: unknown key'),
            ('[hosts."b c"]\nunit = "parks"\n', '[hosts."b c"] [key]: String should match pattern'),
            ('[hosts."b"]\nunit = "parks"\n[hosts."b".x]\n', '[hosts."b"] x: unknown key'),
        ],
    )
    def test_a_bad_host_among_good_ones_gets_the_same_error(self, hosts: str, message: str) -> None:
        """The first bad host table is named, as when each table was validated on its own."""
        good = '[hosts."a"]\nunit = "parks"\n'
        text = good + hosts + good.replace('"a"', '"c"')
        with pytest.raises(PolicyError) as excinfo:
            Policy.from_text(text, "policy.toml")
        assert str(excinfo.value).startswith(f"policy.toml: {message}")

    def test_an_error_before_the_hosts_is_named_first(self) -> None:
        """A bad [defaults] key is the error reported, whatever the hosts hold."""
        text = '[defaults]\nmax_disk_percent = 120\n[hosts."b"]\nunit = 1\n'
        with pytest.raises(PolicyError, match=r"^policy: \[defaults\] max_disk_percent"):
            Policy.from_text(text)


class TestPortSpec:
    def test_ranges_and_single_ports(self) -> None:
        spec = parse_port_spec("TCP/8000-8100")
        assert spec.matches("tcp", 8050)
        assert not spec.matches("udp", 8050)
        assert not spec.matches("tcp", 8101)
        assert parse_port_spec("udp/53").matches("udp", 53)


class TestPolicySource:
    def test_reloads_a_changed_file_and_keeps_the_last_good_one(self, tmp_path: Path) -> None:
        """A changed file is picked up; a broken one is reported and the old policy stays."""
        path = tmp_path / "policy.toml"
        path.write_text(POLICY)
        source = PolicySource(path)
        assert not source.reload_if_changed()
        path.write_text(POLICY.replace("max_report_age = 600", "max_report_age = 300"))
        assert source.reload_if_changed()
        assert source.current.for_host("web-01").baseline.max_report_age == 300
        path.write_text(POLICY + "\n[groups.web]\n")  # duplicate table
        assert not source.reload_if_changed()
        assert source.error is not None
        assert source.current.for_host("web-01").baseline.max_report_age == 300

    def test_the_same_text_written_again_is_not_read_again(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A rewrite of the same text is unchanged, the policy in force kept, nothing parsed."""
        path = tmp_path / "policy.toml"
        path.write_text(POLICY)
        outcomes: list[str] = []
        source = PolicySource(path, outcomes.append)
        path.write_text(POLICY.replace("max_report_age = 600", "max_report_age = 300"))
        assert source.reload_if_changed()
        current = source.current

        def unparsed(text: str, source: str = "policy") -> Policy:
            raise AssertionError(source)

        monkeypatch.setattr(Policy, "from_text", unparsed)
        path.unlink()  # another inode, as a rewrite by rename leaves it
        path.write_text(POLICY.replace("max_report_age = 600", "max_report_age = 300"))
        assert not source.reload_if_changed()
        assert source.current is current
        assert outcomes == ["loaded", "unchanged"]

    def test_missing_file_at_start_is_an_error(self, tmp_path: Path) -> None:
        with pytest.raises(PolicyError, match="cannot read"):
            PolicySource(tmp_path / "absent.toml")
