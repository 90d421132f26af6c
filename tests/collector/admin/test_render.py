"""Showing what hosts reported: hostile text is made visible, never interpreted."""

from __future__ import annotations

import json

from fleetwatch.collector.admin.host_page import host_page
from fleetwatch.collector.admin.render import (
    clean,
    findings_table,
    hosts_table,
    severity_counts,
    to_json,
)


class TestClean:
    def test_escape_sequences_are_made_visible(self) -> None:
        assert clean("evil\x1b[2J\x1b]0;title\x07") == "evil\\x1b[2J\\x1b]0;title\\x07"

    def test_newlines_and_carriage_returns(self) -> None:
        """A host cannot start a fake table row or overwrite a line."""
        assert clean("a\nb\rc") == "a\\x0ab\\x0dc"

    def test_bidi_overrides_and_invisible_characters(self) -> None:
        assert clean("safe\u202eexe.txt") == "safe\\u202eexe.txt"
        assert clean("a\u200bb") == "a\\u200bb"

    def test_c1_controls(self) -> None:
        assert clean("x\x9by") == "x\\x9by"

    def test_ordinary_unicode_stays(self) -> None:
        assert clean("Zürich-01 ✓") == "Zürich-01 ✓"


class TestTables:
    def test_hosts_table_escapes_reported_text(self) -> None:
        text = hosts_table(
            [
                {
                    "host_id": "h1",
                    "unit": "u",
                    "status": "compliant",
                    "last_report_at": None,
                    "agent_version": "1\x1b[31m",
                    "open_by_severity": {},
                }
            ]
        )
        assert "\x1b" not in text
        assert "1\\x1b[31m" in text

    def test_findings_table(self) -> None:
        text = findings_table(
            [
                {
                    "id": 7,
                    "host_id": "h1",
                    "rule": "allowed_ports",
                    "severity": "high",
                    "open": True,
                    "first_seen": "2026-11-26T10:00:00+00:00",
                    "detail": "tcp/8080 is listening\x1b[8m",
                }
            ]
        )
        assert "\x1b" not in text
        assert text.splitlines()[0].split() == [
            "ID",
            "HOST",
            "RULE",
            "SEVERITY",
            "STATE",
            "DUE",
            "AGE",
            "DETAIL",
        ]
        assert text.splitlines()[1].split()[0] == "7"  # the id to acknowledge or waive it by

    def test_json_output_stays_valid_and_inert(self) -> None:
        data = [{"detail": "x\x1b[2J\u202e\x00"}]
        text = to_json(data)
        assert "\x1b" not in text
        assert "\u202e" not in text
        assert json.loads(text) == data

    def test_severity_counts(self) -> None:
        assert severity_counts({"low": 1, "high": 2}) == "3 (2 high, 1 low)"
        assert severity_counts({}) == "0"


class TestHostUpdates:
    def test_held_back_upgrades_and_new_installs_are_listed_escaped(self) -> None:
        """The host view names each held-back upgrade with its reason, and each new install."""
        updates = {
            "manager": "apt",
            "updates": [
                {"name": "vim", "architecture": "amd64", "installed_version": "2:9.0-1",
                 "candidate_version": "2:9.0-2", "security": False},
                {"name": "passwd", "architecture": "amd64", "installed_version": "1:4.13-1",
                 "candidate_version": "1:4.13-1+deb12u1", "security": True,
                 "held_back": "held", "reason": "on hold\x1b[2J"},
            ],
            "new_installs": [
                {"name": "linux-image-6.1.0-57-amd64", "architecture": "amd64",
                 "candidate_version": "6.1.193-1", "security": True},
            ],
        }  # fmt: skip
        host = {"host_id": "h1", "status": "failing", "sections": {"updates": {"data": updates}}}
        text = host_page(host)
        assert "2 pending (1 security) in 2 source packages" in text
        assert (
            "held      passwd:amd64 1:4.13-1 -> 1:4.13-1+deb12u1 security: on hold\\x1b[2J" in text
        )
        assert "new       linux-image-6.1.0-57-amd64:amd64 6.1.193-1" in text
        assert "\x1b" not in text
