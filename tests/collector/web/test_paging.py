"""Cursor paging of the API's lists, and the fleet's counts kept by triggers."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.collector.storage import tallies
from fleetwatch.collector.storage.tables import hosts
from fleetwatch.collector.storage.waivers import NewWaiver
from fleetwatch.collector.web.app import create_app
from fleetwatch.collector.web.paging import MAX_LIMIT
from tests.helpers import make_report, ports_section

ADMIN = "admin-token-for-tests"
SECRET = "enroll-secret-for-tests"
UNITS = ("parks", "water", "roads")


def policy_text(count: int, moved: dict[str, str] | None = None, *, age: int = 600) -> str:
    lines = ["[defaults]", 'allowed_ports = ["tcp/22"]', f"max_report_age = {age}", ""]
    for i in range(count):
        host = f"h{i:03d}"
        unit = (moved or {}).get(host, UNITS[i % len(UNITS)])
        lines += [f'[hosts."{host}"]', f'unit = "{unit}"', ""]
    return "\n".join(lines)


class Fleet:
    def __init__(self, client: TestClient, policy: Path) -> None:
        self.client = client
        self.policy = policy
        self.tokens: dict[str, str] = {}

    def get(self, path: str, token: str = ADMIN, **params: Any) -> Any:
        return self.client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})

    def post(self, path: str, body: Any = None) -> Any:
        return self.client.post(path, json=body, headers={"Authorization": f"Bearer {ADMIN}"})

    def enroll(self, host_id: str) -> None:
        response = self.client.post(
            "/api/v1/enroll", json={"host_id": host_id, "enroll_secret": SECRET}
        )
        assert response.status_code == 200, response.text
        self.tokens[host_id] = response.json()["token"]

    def report(self, host_id: str, sequence: int, *ports: int) -> None:
        sections = make_report(host_id, sequence)["sections"]
        sections["ports"] = ports_section(*(("tcp", "0.0.0.0", p) for p in (22, *ports)))
        response = self.client.post(
            "/api/v1/report",
            json=make_report(host_id, sequence, sections),
            headers={"Authorization": f"Bearer {self.tokens[host_id]}"},
        )
        assert response.status_code == 200, response.text

    def all_pages(self, path: str, token: str = ADMIN, **params: Any) -> list[list[Any]]:
        pages = []
        while True:
            response = self.get(path, token, **params)
            assert response.status_code == 200, response.text
            pages.append(response.json())
            cursor = response.headers.get("X-Next-Cursor")
            if cursor is None:
                assert "Link" not in response.headers
                return pages
            assert response.headers["Link"].endswith('; rel="next"')
            assert f"cursor={cursor}" in response.headers["Link"]
            params = {**params, "cursor": cursor}

    @property
    def store(self) -> Any:
        return self.client.app.state.service.store  # type: ignore[attr-defined]


@pytest.fixture
def fleet(database_url: str, tmp_path: Path) -> Iterator[Fleet]:
    policy = tmp_path / "policy.toml"
    policy.write_text(policy_text(20))
    settings = CollectorSettings(
        database_url=database_url,
        policy=policy,
        admin_token=ADMIN,
        enroll_secret=SECRET,
        data_dir=tmp_path,
        max_body_bytes=2_000_000,
    )
    with TestClient(create_app(settings)) as client:
        yield Fleet(client, policy)


def ids(pages: list[list[dict[str, Any]]], key: str = "host_id") -> list[Any]:
    return [row[key] for page in pages for row in page]


class TestHostPages:
    def test_every_host_once_across_pages(self, fleet: Fleet) -> None:
        """Pages of 7 list the 20 hosts of the policy once each, in host order."""
        pages = fleet.all_pages("/api/v1/hosts", limit=7)
        assert [len(p) for p in pages] == [7, 7, 6]
        assert ids(pages) == [f"h{i:03d}" for i in range(20)]

    def test_rows_added_while_paging_do_not_repeat_or_hide_others(self, fleet: Fleet) -> None:
        """Hosts enrolled between pages never make a host show twice or go missing."""
        seen: list[str] = []
        params: dict[str, Any] = {"limit": 5}
        added = 0
        while True:
            response = fleet.get("/api/v1/hosts", **params)
            seen += [h["host_id"] for h in response.json()]
            fleet.enroll(f"a{added:03d}")  # sorts before every h...: behind the cursor
            fleet.enroll(f"z{added:03d}")  # sorts after: ahead of it
            added += 1
            cursor = response.headers.get("X-Next-Cursor")
            if cursor is None:
                break
            params["cursor"] = cursor
        assert len(seen) == len(set(seen))
        assert {f"h{i:03d}" for i in range(20)} <= set(seen)
        assert not any(h.startswith("a") for h in seen)

    def test_filters_apply_to_every_page(self, fleet: Fleet) -> None:
        """A unit and a status filter hold across pages, as does a sort by last report."""
        for host in ("h000", "h003", "h006"):
            fleet.enroll(host)
        fleet.report("h000", 1, 8080)
        fleet.report("h003", 1)
        parks = ids(fleet.all_pages("/api/v1/hosts", unit="parks", limit=2))
        assert parks == [f"h{i:03d}" for i in range(0, 20, 3)]
        never = ids(
            fleet.all_pages("/api/v1/hosts", unit="parks", status="never_reported", limit=2)
        )
        assert never == [h for h in parks if h not in {"h000", "h003"}]
        bad = ids(fleet.all_pages("/api/v1/hosts", status="noncompliant", limit=1))
        assert bad == ["h000"]
        by_report = ids(fleet.all_pages("/api/v1/hosts", sort="last_report", desc=True, limit=3))
        assert by_report[:2] == ["h003", "h000"]
        assert sorted(by_report) == [f"h{i:03d}" for i in range(20)]
        text = ids(fleet.all_pages("/api/v1/hosts", text="h01", limit=4))
        assert text == [f"h{i:03d}" for i in range(10, 20)]

    def test_unit_reader_sees_its_unit_on_every_page(self, fleet: Fleet) -> None:
        """A token limited to a unit pages through that unit's hosts only, whatever it asks."""
        made = fleet.post("/api/v1/tokens", {"name": "parks", "kind": "read", "unit": "parks"})
        token = made.json()["token"]
        seen = ids(fleet.all_pages("/api/v1/hosts", token, limit=2))
        assert seen == [f"h{i:03d}" for i in range(0, 20, 3)]
        assert ids(fleet.all_pages("/api/v1/hosts", token, unit="water", limit=2)) == []


class TestCursors:
    def _cursor(self, fleet: Fleet, **params: Any) -> str:
        response = fleet.get("/api/v1/hosts", limit=3, **params)
        return str(response.headers["X-Next-Cursor"])

    @pytest.mark.parametrize(
        ("cursor", "words"),
        [
            ("not a cursor!", "base64url"),
            ("bm90IGEgY3Vyc29y", "altered"),  # "not a cursor", no check
            ("", "altered"),
        ],
    )
    def test_malformed_cursor_is_refused_with_400(
        self, fleet: Fleet, cursor: str, words: str
    ) -> None:
        """A cursor the API did not write is refused with 400 saying what is wrong."""
        response = fleet.get("/api/v1/hosts", cursor=cursor)
        assert response.status_code == 400, response.text
        assert words in response.json()["detail"]

    def test_tampered_cursor_is_refused(self, fleet: Fleet) -> None:
        """A cursor edited to start elsewhere fails its check."""
        cursor = self._cursor(fleet)
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        forged = raw.replace(b"h002", b"h009")
        assert forged != raw
        response = fleet.get(
            "/api/v1/hosts", cursor=base64.urlsafe_b64encode(forged).decode().rstrip("=")
        )
        assert response.status_code == 400
        assert "altered" in response.json()["detail"]

    def test_cursor_of_other_filters_or_list_is_refused(self, fleet: Fleet) -> None:
        """A cursor is good only for the list and filters it was made for."""
        cursor = self._cursor(fleet, unit="parks")
        other = fleet.get("/api/v1/hosts", unit="water", cursor=cursor)
        assert other.status_code == 400
        assert "other filters" in other.json()["detail"]
        findings = fleet.get("/api/v1/findings", cursor=cursor)
        assert findings.status_code == 400
        assert "another list" in findings.json()["detail"]

    @pytest.mark.parametrize("limit", [0, -1, MAX_LIMIT + 1])
    def test_limit_out_of_bounds_is_refused(self, fleet: Fleet, limit: int) -> None:
        """A page holds 1 to MAX_LIMIT rows."""
        assert fleet.get("/api/v1/hosts", limit=limit).status_code == 422
        assert fleet.get("/api/v1/findings", limit=limit).status_code == 422

    def test_largest_limit_is_accepted(self, fleet: Fleet) -> None:
        response = fleet.get("/api/v1/hosts", limit=MAX_LIMIT)
        assert response.status_code == 200
        assert len(response.json()) == 20
        assert "X-Next-Cursor" not in response.headers


class TestFindingPages:
    def _findings(self, fleet: Fleet) -> None:
        for i in range(6):
            host = f"h{i:03d}"
            fleet.enroll(host)
            fleet.report(host, 1, 8080, 8081)

    def test_every_finding_once_while_more_open(self, fleet: Fleet) -> None:
        """Findings page by id; findings opened while paging come at the end, once."""
        self._findings(fleet)
        first = fleet.get("/api/v1/findings", limit=5)
        seen = [f["id"] for f in first.json()]
        fleet.report("h000", 2, 8080, 8081, 9090)  # a new finding meanwhile
        params = {"limit": 5, "cursor": first.headers["X-Next-Cursor"]}
        seen += ids(fleet.all_pages("/api/v1/findings", **params), "id")
        assert len(seen) == len(set(seen)) == 13
        assert seen == sorted(seen)

    def test_filters_and_unit_scope_across_pages(self, fleet: Fleet) -> None:
        """Unit, rule, severity and open filters hold on every page, and a unit's token sees
        its unit's findings only."""
        self._findings(fleet)
        everything = ids(fleet.all_pages("/api/v1/findings", limit=100), "id")
        parks = fleet.all_pages("/api/v1/findings", unit="parks", open="true", limit=3)
        assert {f["host_id"] for f in ids_rows(parks)} == {"h000", "h003"}
        assert len(ids_rows(parks)) == 4
        severity = ids_rows(fleet.all_pages("/api/v1/findings", limit=100))[0]["severity"]
        same = ids_rows(fleet.all_pages("/api/v1/findings", severity=severity, limit=4))
        assert len(same) == len(everything)
        other = "low" if severity != "low" else "high"
        assert ids_rows(fleet.all_pages("/api/v1/findings", severity=other, limit=4)) == []
        token = fleet.post(
            "/api/v1/tokens", {"name": "water", "kind": "read", "unit": "water"}
        ).json()["token"]
        water = ids_rows(fleet.all_pages("/api/v1/findings", token, limit=1))
        assert {f["host_id"] for f in water} == {"h001", "h004"}
        assert ids_rows(fleet.all_pages("/api/v1/findings", token, unit="parks")) == []


def ids_rows(pages: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [row for page in pages for row in page]


class TestReportPages:
    def test_a_hosts_reports_page_newest_first(self, fleet: Fleet) -> None:
        """Reports that each changed something come back newest first, once each."""
        fleet.enroll("h000")
        for sequence in range(1, 6):
            fleet.report("h000", sequence, *(range(8000, 8000 + sequence)))
        pages = fleet.all_pages("/api/v1/hosts/h000/reports", limit=2)
        assert [r["sequence"] for r in ids_rows(pages)] == [5, 4, 3, 2, 1]
        assert [len(p) for p in pages] == [2, 2, 1]

    def test_reports_of_a_host_outside_the_readers_unit(self, fleet: Fleet) -> None:
        fleet.enroll("h001")
        token = fleet.post(
            "/api/v1/tokens", {"name": "parks", "kind": "read", "unit": "parks"}
        ).json()["token"]
        assert fleet.get("/api/v1/hosts/h001/reports", token).status_code == 404


def waiver(scope: str, target: str, hours: float = 1) -> dict[str, str]:
    return {
        "scope": scope, "target": target, "rule": "allowed_ports", "reason": "r", "owner": "o",
        "expires_at": (datetime.now(UTC) + timedelta(hours=hours)).isoformat(),
    }  # fmt: skip


def tampered(cursor: str) -> str:
    """The cursor with one byte of its position changed (its check left as it was)."""
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    at = raw.index(b'"p":[') + 5
    raw[at] = ord("9") if raw[at] != ord("9") else ord("8")
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


class TestWaiverPages:
    def _waivers(self, fleet: Fleet) -> dict[str, list[int]]:
        """A host waiver on each of the 20 hosts, one per unit, a group's, an expired one,
        and three revoked: their ids, by what they are."""
        made: dict[str, list[int]] = {"host": [], "unit": []}
        for i in range(20):
            answer = fleet.post("/api/v1/waivers", waiver("host", f"h{i:03d}"))
            assert answer.status_code == 200, answer.text
            made["host"].append(answer.json()["id"])
        for unit in UNITS:
            made["unit"].append(fleet.post("/api/v1/waivers", waiver("unit", unit)).json()["id"])
        past = datetime.now(UTC) - timedelta(hours=1)
        with fleet.store.write() as conn:
            for scope, target, expires in (("group", "web", past + timedelta(hours=2)),
                                           ("host", "h000", past)):  # fmt: skip
                row = fleet.store.waivers.add(
                    conn,
                    NewWaiver("api", None, scope, target, "allowed_ports", "*", "r", "o",
                              "admin", past - timedelta(hours=1), expires),
                )  # fmt: skip
                made.setdefault(scope if scope == "group" else "expired", []).append(row.id)
        made["revoked"] = [made["host"][3], made["host"][4], made["unit"][0]]
        for waiver_id in made["revoked"]:
            assert fleet.post(f"/api/v1/waivers/{waiver_id}/revoke").status_code == 200
        return made

    def test_every_waiver_once_newest_first(self, fleet: Fleet) -> None:
        """Pages of 3 list every waiver once, newest first; in force only, without the
        revoked and expired ones."""
        made = self._waivers(fleet)
        every = ids(fleet.all_pages("/api/v1/waivers", all="true", limit=3), "id")
        assert every == sorted({i for group in made.values() for i in group}, reverse=True)
        assert len(every) == 25
        ended = set(made["revoked"]) | set(made["expired"])
        in_force = ids(fleet.all_pages("/api/v1/waivers", limit=3), "id")
        assert in_force == [i for i in every if i not in ended]
        assert all(w["in_force"] for page in fleet.all_pages("/api/v1/waivers") for w in page)

    def test_a_unit_reader_pages_through_its_units_waivers_only(self, fleet: Fleet) -> None:
        """A token limited to a unit gets its unit's waiver and its hosts', never a group's,
        on every page."""
        made = self._waivers(fleet)
        token = fleet.post(
            "/api/v1/tokens", {"name": "water", "kind": "read", "unit": "water"}
        ).json()["token"]
        seen = ids_rows(fleet.all_pages("/api/v1/waivers", token, all="true", limit=3))
        hosts = {f"h{i:03d}" for i in range(1, 20, 3)}
        assert {(w["scope"], w["target"]) for w in seen} == {("unit", "water")} | {
            ("host", h) for h in hosts
        }
        assert len(seen) == len(hosts) + 1
        assert [w["id"] for w in seen] == sorted((w["id"] for w in seen), reverse=True)
        assert made["group"][0] not in {w["id"] for w in seen}

    def test_bad_cursors_and_offsets_are_refused(self, fleet: Fleet) -> None:
        """A tampered cursor, one of other filters, and an offset (paging by offset is
        gone) are refused with 400 saying what is wrong."""
        self._waivers(fleet)
        first = fleet.get("/api/v1/waivers", all="true", limit=3)
        cursor = first.headers["X-Next-Cursor"]
        altered = fleet.get("/api/v1/waivers", all="true", cursor=tampered(cursor))
        assert altered.status_code == 400
        assert "altered" in altered.json()["detail"]
        other = fleet.get("/api/v1/waivers", cursor=cursor)
        assert other.status_code == 400
        assert "other filters" in other.json()["detail"]
        offset = fleet.get("/api/v1/waivers", offset=3)
        assert offset.status_code == 400
        assert "X-Next-Cursor" in offset.json()["detail"]
        assert fleet.get("/api/v1/waivers", offset=0).status_code == 200
        assert fleet.get("/api/v1/waivers", limit=MAX_LIMIT + 1).status_code == 422


class TestAuditPages:
    def test_every_event_once_with_a_filter_and_a_bad_cursor_refused(self, fleet: Fleet) -> None:
        """The audit log pages oldest first, each event once, a unit filter held on every
        page; ``after`` starts where the cursor would; a tampered cursor gets 400."""
        for i in range(12):
            assert fleet.post("/api/v1/waivers", waiver("host", f"h{i:03d}")).status_code == 200
        every = ids_rows(fleet.all_pages("/api/v1/audit", limit=3))
        assert len(every) >= 12
        assert [e["id"] for e in every] == sorted({e["id"] for e in every})
        parks = ids_rows(fleet.all_pages("/api/v1/audit", unit="parks", limit=3))
        assert parks == [e for e in every if e["unit"] == "parks"]
        assert len(parks) == 4
        after = ids(fleet.all_pages("/api/v1/audit", after=every[4]["id"], limit=3), "id")
        assert after == [e["id"] for e in every[5:]]
        cursor = fleet.get("/api/v1/audit", limit=3).headers["X-Next-Cursor"]
        refused = fleet.get("/api/v1/audit", limit=3, cursor=tampered(cursor))
        assert refused.status_code == 400
        assert "altered" in refused.json()["detail"]


class TestTallies:
    def _agree(self, fleet: Fleet) -> None:
        with fleet.store.read() as conn:
            assert tallies.kept(conn) == {k: v for k, v in tallies.recount(conn).items() if v}

    def test_kept_counts_equal_a_recount_through_a_fleets_changes(self, fleet: Fleet) -> None:
        """Reports, waivers, policy changes that move hosts between units or drop them,
        revocations and a host deleted: the kept counts equal a count from scratch each time."""
        self._agree(fleet)
        for i in range(9):
            fleet.enroll(f"h{i:03d}")
            fleet.report(f"h{i:03d}", 1, *([8080] if i % 2 else []))
        fleet.enroll("stray")  # not in the policy
        self._agree(fleet)
        fleet.report("h001", 2)  # its finding resolves
        fleet.report("h002", 2, 9090)  # one opens
        self._agree(fleet)
        waiver = {
            "scope": "unit", "target": "water", "rule": "allowed_ports", "reason": "r",
            "owner": "o", "expires_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        }  # fmt: skip
        assert fleet.post("/api/v1/waivers", waiver).status_code == 200
        self._agree(fleet)
        fleet.policy.write_text(policy_text(15, {"h003": "water", "h004": "roads"}))
        assert fleet.post("/api/v1/policy/reload").json()["changed"] is True
        self._agree(fleet)
        assert fleet.post("/api/v1/hosts/h005/revoke").status_code == 200
        with fleet.store.write() as conn:
            fleet.store.hosts.delete(conn, "h007")
        self._agree(fleet)
        with fleet.store.write() as conn:
            conn.execute(
                hosts.update().where(hosts.c.host_id == "h006").values(last_received_at=None)
            )
        self._agree(fleet)

    def test_counts_by_status_match_the_host_list(self, fleet: Fleet) -> None:
        """Hosts by unit and status from the kept counts (stale ones found by time) equal
        what the host list says of each host."""
        for i in range(6):
            fleet.enroll(f"h{i:03d}")
            fleet.report(f"h{i:03d}", 1, *([8080] if i % 2 else []))
        service = fleet.client.app.state.service  # type: ignore[attr-defined]
        later = datetime.now(UTC) + timedelta(seconds=300)
        for now in (datetime.now(UTC), later + timedelta(seconds=600)):
            with fleet.store.read() as conn:
                counted = tallies.hosts_by_status(conn, now, 600)
            listed: dict[str, dict[str, int]] = {}
            from fleetwatch.collector.storage.fleet_view import FleetView, HostFilter, Scope

            with fleet.store.read() as conn:
                page = FleetView(conn, 600, now).host_page(Scope(), HostFilter(), limit=1000)
            for line in page.lines:
                unit = listed.setdefault(line.unit or "", {})
                unit[line.status] = unit.get(line.status, 0) + 1
            assert {u: {s: n for s, n in c.by_status.items() if n} for u, c in counted.items()} == (
                listed
            )
        assert service is not None
