"""The admin command line's own answers: usage errors, help texts, empty results, a host page."""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
from pathlib import Path

import pytest

from fleetwatch.collector.admin.cli import _parser, main
from fleetwatch.collector.admin.host_page import host_page
from fleetwatch.collector.admin.render import nothing_found, tokens_table
from fleetwatch.command_line import CommandParser
from tests.helpers import BASE_REPORT

BIN = Path(sys.executable).parent
ROOT = Path(__file__).parents[3]


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    return capsys.readouterr().err


class TestUsageErrors:
    def test_a_group_without_subcommand_names_its_choices(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`fleetwatch token` says what to type next, as the user would type it."""
        err = _usage_error(["token"], capsys)
        assert err.splitlines()[-1] == "fleetwatch token: choose one of list, create, revoke"
        assert "token_command" not in err

    def test_no_command_at_all(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`fleetwatch` alone lists the commands."""
        last = _usage_error([], capsys).splitlines()[-1]
        assert last.startswith("fleetwatch: choose one of serve, db, hosts, host, findings")

    def test_every_group_of_the_parser_answers_so(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Each command group that needs a subcommand (those added today and later) gets the
        same answer. (`fleetwatch vulns` alone lists vulnerabilities: its subcommands are optional.)"""
        commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
        groups = [
            name
            for name, sub in commands.choices.items()
            if getattr(sub, "_required_commands", None) is not None
        ]
        assert {"db", "token", "policy"} <= set(groups)
        for name in groups:
            last = _usage_error([name], capsys).splitlines()[-1]
            assert last.startswith(f"fleetwatch {name}: choose one of "), last

    def test_a_new_group_needs_nothing_but_required_true(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A group added by a module of its own, two levels deep, answers by its full name."""
        parser = CommandParser(prog="tool")
        group = parser.add_subparsers(dest="command", required=True).add_parser("waivers")
        sub = group.add_subparsers(dest="waiver_command", required=True).add_parser("add")
        sub.add_subparsers(dest="what", required=True).add_parser("host")
        with pytest.raises(SystemExit):
            parser.parse_args(["waivers", "add"])
        assert capsys.readouterr().err.splitlines()[-1] == "tool waivers add: choose one of host"

    def test_the_agent_answers_the_same_way(self) -> None:
        """`fleetwatch-agent` alone names its commands too."""
        done = subprocess.run(
            [str(BIN / "fleetwatch-agent")], capture_output=True, text=True, check=False
        )
        assert done.returncode == 2
        assert done.stderr.splitlines()[-1] == (
            "fleetwatch-agent: choose one of collect, run, rotate-token"
        )


class TestHelp:
    @pytest.mark.parametrize("command", ["fleetwatch", "fleetwatch-agent"])
    def test_help_reads_as_a_sentence(self, command: str) -> None:
        """--help's description is plain text, not a docstring's ``literal``."""
        done = subprocess.run(
            [str(BIN / command), "--help"], capture_output=True, text=True, check=True
        )
        description = done.stdout.split("\n\n")[1]
        assert "``" not in done.stdout
        assert description[0].isupper(), description


class TestEmptyResults:
    def test_filters_that_match_nothing_are_named(self) -> None:
        """An empty answer names the filters that matched nothing, not a bare header."""
        text = nothing_found("findings", {"host": "web-01", "open": True, "rule": None})
        assert text == "no findings match --host web-01 --open"

    def test_without_filters(self) -> None:
        assert nothing_found("hosts", {"unit": None, "noncompliant": False}) == "no hosts"

    def test_filter_values_are_shown_inert(self) -> None:
        """A filter value typed or pasted with an escape sequence is printed escaped."""
        assert "\x1b" not in nothing_found("hosts", {"unit": "a\x1b[2J"})


class TestTokens:
    def test_tokens_from_the_environment_say_so_without_a_value(self) -> None:
        """A token the collector reads from its environment is listed as such."""
        text = tokens_table(
            [
                {
                    "id": None,
                    "name": "FLEETWATCH_ADMIN_TOKEN",
                    "kind": "admin",
                    "unit": None,
                    "created_at": None,
                    "revoked_at": None,
                    "last_used_at": None,
                    "source": "environment",
                }
            ]
        )
        row = text.splitlines()[1]
        assert row.split()[:3] == ["-", "FLEETWATCH_ADMIN_TOKEN", "admin"]
        assert row.endswith("from environment")


def _host(**sections: object) -> dict[str, object]:
    """A host as the API answers with data=true, its sections from the captured report."""
    data = copy.deepcopy(BASE_REPORT["sections"])
    data.update(sections)
    return {
        "host_id": "web-01",
        "unit": "parks",
        "groups": ["web"],
        "status": "noncompliant",
        "last_report_at": "2026-11-26T11:52:00+00:00",
        "agent_version": "0.1.0",
        "enrolled_at": "2026-11-26T11:50:00+00:00",
        "last_sequence": 7,
        "dropped_reports": 0,
        "spool_error": None,
        "sections": {
            name: {"hash": s.get("hash"), "error": s.get("error"), "data": s.get("data")}
            for name, s in data.items()
        },
        "findings": [],
    }


class TestHostPage:
    def test_every_section_has_a_heading(self) -> None:
        """System, findings, updates, ports, services, checks, resources, delivery: in order."""
        page = host_page(_host())
        headings = [line for line in page.splitlines() if line and not line.startswith(" ")]
        names = [h for h in headings if ":" not in h]
        assert names == [
            "system",
            "findings",
            "updates",
            "ports",
            "services",
            "checks",
            "resources",
            "delivery",
        ]

    def test_system_shows_os_kernel_and_reboot(self) -> None:
        """The OS, the kernel and whether a reboot is needed are on the page."""
        page = host_page(_host())
        assert "os:            Debian GNU/Linux 12 (bookworm)" in page
        assert "kernel:        6.18.44-fc-v857" in page
        assert "reboot needed: no" in page

    def test_updates_are_grouped_by_source_package(self) -> None:
        """libssl3, libssl-dev and openssl come from openssl: one row, security first."""
        page = host_page(_host())
        rows = [line for line in page.splitlines() if line.strip().startswith("openssl ")]
        assert len(rows) == 1
        assert rows[0].split()[1] == "security"
        assert rows[0].rstrip().endswith("libssl-dev, libssl3, openssl")
        updates = BASE_REPORT["sections"]["updates"]["data"]["updates"]
        security = sum(1 for u in updates if u["security"])
        assert f"{len(updates)} pending ({security} security) in 54 source packages" in page

    def test_ports_and_an_unknown_services_section(self) -> None:
        """Listeners are listed; services without systemd say why they are not known."""
        page = host_page(_host())
        assert "tcp/1883   127.0.0.1  mosquitto  mosquitto" in page
        assert "not known: systemd is not the init system" in page

    def test_a_section_that_failed_says_so(self) -> None:
        """A section the agent could not collect shows its error instead of data."""
        page = host_page(_host(ports={"hash": None, "data": None, "error": "ss: \x1b[31mboom"}))
        assert "not collected: ss: \\x1b[31mboom" in page
        assert "\x1b" not in page

    def test_packages_are_counted_not_listed(self) -> None:
        """The package list stays with --json; the page counts it."""
        page = host_page(_host())
        assert "adwaita-icon-theme" not in page
        count = len(BASE_REPORT["sections"]["packages"]["data"]["packages"])
        assert f"{count} installed (dpkg)" in page


def _compile(path: Path) -> subprocess.CompletedProcess[str]:
    # the real command in a process of its own: pyinfra's inventory loader patches the process
    # it runs in for gevent, which would leave later tests' threads to gevent's hub
    return subprocess.run(
        [str(BIN / "fleetwatch"), "policy", "compile", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class TestPolicyCompile:
    def test_the_inventory_directory_is_enough(self) -> None:
        """`policy compile inventory/` compiles the one inventory file in it."""
        pytest.importorskip("pyinfra")
        from_directory = _compile(ROOT / "inventory")
        assert from_directory.returncode == 0, from_directory.stderr
        from_file = _compile(ROOT / "inventory" / "fleet.py")
        assert from_file.returncode == 0, from_file.stderr
        # the first line names what was given; the rest is the same policy
        assert from_file.stdout.split("\n", 1)[1] == from_directory.stdout.split("\n", 1)[1]
        assert '[hosts."web-01.parks.example.org"]' in from_directory.stdout

    def test_a_directory_with_several_inventories_asks_for_one(self, tmp_path: Path) -> None:
        """Two inventory files in a directory: the error names them."""
        (tmp_path / "a.py").write_text("web = ['w1']\n")
        (tmp_path / "b.py").write_text("web = ['w2']\n")
        done = _compile(tmp_path)
        assert done.returncode == 1
        assert "several inventory files (a.py, b.py); name one" in done.stderr


def test_vulns_alone_lists_and_its_subcommands_parse() -> None:
    """`fleetwatch vulns` alone (with filters) lists; `import` and `status` are subcommands."""
    from fleetwatch.collector.admin import vulns

    listing = _parser().parse_args(["vulns", "--unit", "parks", "--severity", "high"])
    assert (listing.func, listing.unit, listing.severity) == (vulns.cmd_list, "parks", ["high"])
    imported = _parser().parse_args(["vulns", "import", "data.json", "--format", "kev"])
    assert (imported.func, imported.format) == (vulns.cmd_import, "kev")
    assert _parser().parse_args(["vulns", "status"]).func is vulns.cmd_status
