"""What the dashboard's pages show, and to whom."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from fleetwatch.collector.web.dashboard.browser import CONTENT_SECURITY_POLICY
from tests.collector.web.dashboard.fleet import ADMIN, HOSTILE, api_token, report_as, sign_in

PAGES = [
    "/dashboard/",
    "/dashboard/hosts",
    "/dashboard/hosts/web-01",
    "/dashboard/findings",
    "/dashboard/findings?state=all",
    "/dashboard/sessions",
]


def api(client: TestClient, path: str, token: str = ADMIN, **params: Any) -> Any:
    answer = client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def figure(page: str, element_id: str) -> int:
    found = re.search(rf'id="{element_id}">(\d+)<', page)
    assert found is not None, element_id
    return int(found.group(1))


def hosts_listed(page: str) -> list[str]:
    return re.findall(r'<tr data-host="([^"]+)"', page)


class TestOverview:
    def test_the_figures_are_the_apis(self, client: TestClient) -> None:
        """Hosts by status and open findings by severity on the overview equal what the API
        says of every host."""
        sign_in(client, ADMIN)
        page = client.get("/dashboard/").text
        hosts = api(client, "/api/v1/hosts")
        assert figure(page, "total-hosts") == len(hosts) == 6
        assert figure(page, "total-stale") == 1
        for status in ("compliant", "noncompliant", "stale", "never_reported"):
            expected = sum(1 for h in hosts if h["status"] == status)
            assert figure(page, f"total-{status}") == expected, status
        for severity in ("critical", "high", "medium", "low"):
            expected = sum(h["open_by_severity"].get(severity, 0) for h in hosts)
            assert figure(page, f"open-{severity}") == expected, severity
        assert figure(page, "total-noncompliant") >= 2  # the fixture hosts listen beyond 22

    def test_the_housekeepers_snapshot_is_shown_while_fresh(self, client: TestClient) -> None:
        """With dashboard_live_max_age set, the overview shows the live snapshot (until the
        next one, a new host is not counted yet)."""
        svc = client.app.state.service  # type: ignore[attr-defined]
        svc.settings.dashboard_live_max_age = 600
        sign_in(client, ADMIN)
        before = figure(client.get("/dashboard/").text, "total-hosts")
        report_as(client, "new-01")
        assert figure(client.get("/dashboard/").text, "total-hosts") == before
        svc.fleet_recorder.refresh()
        assert figure(client.get("/dashboard/").text, "total-hosts") == before + 1

    def test_the_unit_table_sorts(self, client: TestClient) -> None:
        """The unit table follows its sort links, both ways."""
        sign_in(client, ADMIN)
        up = re.findall(r'<tr data-unit="([^"]*)"', client.get("/dashboard/?sort=unit").text)
        down = re.findall(
            r'<tr data-unit="([^"]*)"', client.get("/dashboard/?sort=unit&desc=true").text
        )
        assert up == ["parks", "water"]
        assert down == ["water", "parks"]

    def test_trends_draw_the_recorded_snapshots(self, client: TestClient) -> None:
        """With two hourly snapshots the trend charts are SVG polylines, not a blank."""
        from datetime import UTC, datetime, timedelta

        svc = client.app.state.service  # type: ignore[attr-defined]
        svc.fleet_recorder.refresh(datetime.now(UTC) - timedelta(hours=2))
        sign_in(client, ADMIN)
        page = client.get("/dashboard/?days=7").text
        assert page.count("<polyline") == 5  # the compliance rate, four severities
        assert "Not enough history" not in page


class TestUnitReader:
    def test_a_unit_reader_sees_only_their_unit_everywhere(self, client: TestClient) -> None:
        """A reader of unit parks: the totals, the unit table, the host list and the findings
        are parks' alone."""
        token = api_token(client, "read", "parks")
        sign_in(client, token)
        overview = client.get("/dashboard/").text
        parks = api(client, "/api/v1/hosts", token)
        assert {h["unit"] for h in parks} == {"parks"}
        assert figure(overview, "total-hosts") == len(parks) == 3
        assert re.findall(r'<tr data-unit="([^"]*)"', overview) == ["parks"]
        assert sorted(hosts_listed(client.get("/dashboard/hosts").text)) == sorted(
            h["host_id"] for h in parks
        )
        # asking for another unit's hosts finds nothing
        assert hosts_listed(client.get("/dashboard/hosts?unit=water").text) == []
        findings = client.get("/dashboard/findings?state=all").text
        assert "db-01" not in findings
        assert "web-01" in findings
        assert "water" not in client.get("/dashboard/findings?unit=water").text.split("<main")[1]

    def test_a_unit_reader_cannot_open_another_units_host(self, client: TestClient) -> None:
        """Typing the URL of another unit's host answers 404, as for a host that does not
        exist, and shows nothing of it."""
        sign_in(client, api_token(client, "read", "parks"))
        for host_id in ["db-01", "evil-01", "no-such-host"]:
            answer = client.get(f"/dashboard/hosts/{host_id}")
            assert answer.status_code == 404
            assert "Open findings" not in answer.text
        assert client.get("/dashboard/hosts/web-01").status_code == 200

    def test_a_unit_reader_has_no_sessions_page(self, client: TestClient) -> None:
        """Only an admin sees who is signed in."""
        sign_in(client, api_token(client, "read", "parks"))
        assert client.get("/dashboard/sessions").status_code == 403


class TestHosts:
    def test_filters_by_unit_group_status_and_text(self, client: TestClient) -> None:
        """Each filter of the host list keeps the hosts the API says match."""
        sign_in(client, ADMIN)
        assert sorted(hosts_listed(client.get("/dashboard/hosts?unit=water").text)) == [
            "db-01",
            "evil-01",
            "old-01",
        ]
        assert sorted(hosts_listed(client.get("/dashboard/hosts?group=web").text)) == [
            "web-01",
            "web-02",
        ]
        never = [h["host_id"] for h in api(client, "/api/v1/hosts", status="never_reported")]
        assert hosts_listed(client.get("/dashboard/hosts?status=never_reported").text) == never
        assert hosts_listed(client.get("/dashboard/hosts?q=eb-0").text) == ["web-01", "web-02"]
        assert hosts_listed(client.get("/dashboard/hosts?q=%25").text) == []  # % is literal

    def test_each_status_filter_lists_the_apis_hosts(self, client: TestClient) -> None:
        """Filtering by each status lists exactly the hosts the API gives that status."""
        sign_in(client, ADMIN)
        for status in ("compliant", "noncompliant", "stale", "never_reported"):
            expected = sorted(h["host_id"] for h in api(client, "/api/v1/hosts", status=status))
            page = client.get(f"/dashboard/hosts?status={status}").text
            assert sorted(hosts_listed(page)) == expected, status

    def test_the_status_shown_is_the_apis(self, client: TestClient) -> None:
        """The status worked out in SQL for the list equals the API's, host by host."""
        sign_in(client, ADMIN)
        page = client.get("/dashboard/hosts").text
        shown = dict(
            re.findall(r'<tr data-host="([^"]+)">.*?status status-(\w+)"', page, re.DOTALL)
        )
        assert shown == {h["host_id"]: h["status"] for h in api(client, "/api/v1/hosts")}

    def test_pages_follow_on_without_gaps_or_repeats(self, client: TestClient) -> None:
        """Paging two at a time, in every sort order, lists every host once."""
        from fleetwatch.collector.auth.identity import Principal
        from fleetwatch.collector.storage.fleet_view import HostFilter
        from fleetwatch.collector.web.dashboard import queries

        svc = client.app.state.service  # type: ignore[attr-defined]
        everyone = Principal("test", "admin")
        for sort in ("host", "unit", "status", "last_report"):
            for desc in (False, True):
                seen: list[str] = []
                after = None
                while True:
                    page = queries.host_page(
                        svc, everyone, HostFilter(), sort=sort, desc=desc, after=after, limit=2
                    )
                    seen += [h.host_id for h in page.lines]
                    if page.next_after is None:
                        break
                    after = page.next_after
                assert sorted(seen) == sorted(h["host_id"] for h in api(client, "/api/v1/hosts"))
                assert len(seen) == len(set(seen)), (sort, desc)


class TestHostPage:
    def test_shows_facts_ports_updates_and_delivery(self, client: TestClient) -> None:
        """The host page has the system facts, listening ports with process and user, pending
        updates grouped by source package, and the last reports."""
        sign_in(client, ADMIN)
        page = client.get("/dashboard/hosts/web-01").text
        detail = api(client, "/api/v1/hosts/web-01")
        assert "Debian GNU/Linux 12 (bookworm)" in page
        assert "mariadbd" in page
        assert "mysql" in page
        assert len(re.findall(r"<tr data-finding|<td><span class=\"sev", page)) >= len(
            detail["findings"]
        )
        # apt and apt-transport-https come from one source package, apt
        row = re.search(r"<th scope=\"row\">apt</th><td>([^<]+)</td>", page)
        assert row is not None
        assert "apt-transport-https" in row.group(1)
        assert 'id="agent-version">0.1.0<' in page

    def test_shows_the_hosts_vulnerabilities(self, client: TestClient) -> None:
        """With vulnerability data, the host page lists the host's CVEs, known-exploited
        first; another unit's reader sees none of them."""
        from datetime import UTC, datetime

        from fleetwatch.collector.storage.host_vulnerabilities import HostVulnerability

        svc = client.app.state.service  # type: ignore[attr-defined]

        def vuln(name: str, *, exploited: bool, cvss: float) -> HostVulnerability:
            return HostVulnerability(
                host_id="web-01",
                vuln=name,
                source="openssl",
                release="bookworm",
                installed_version="3.0.11-1~deb12u1",
                fixed_version="3.0.15-1~deb12u1",
                status="fixed",
                severity="high",
                urgency=None,
                cvss=cvss,
                fixable=True,
                exploited=exploited,
                flags=[],
                advisories=["DSA-0000-1"],
                binaries=["libssl3"],
                fix_since=None,
                note=None,
                first_seen=datetime.now(UTC),
            )

        with svc.store.write() as conn:
            svc.store.host_vulnerabilities.apply(
                conn,
                [
                    vuln("CVE-2024-0001", exploited=False, cvss=9.8),
                    vuln("CVE-2024-0002", exploited=True, cvss=5.0),
                ],
                [],
                [],
            )
        sign_in(client, ADMIN)
        page = client.get("/dashboard/hosts/web-01").text
        assert re.findall(r'<tr data-vuln="([^"]+)"', page) == ["CVE-2024-0002", "CVE-2024-0001"]
        assert "known exploited" in page
        assert "3.0.11-1~deb12u1 → 3.0.15-1~deb12u1" in page
        client.cookies.clear()
        sign_in(client, api_token(client, "read", "water"))
        assert "CVE-2024" not in client.get("/dashboard/hosts/web-01").text

    def test_hostile_host_data_renders_as_text(self, client: TestClient) -> None:
        """Markup a host reported (hostname, process, user) is escaped, never markup."""
        sign_in(client, ADMIN)
        page = client.get("/dashboard/hosts/evil-01").text
        assert HOSTILE not in page
        assert "<script" not in page
        assert html.escape(HOSTILE, quote=False).replace("&#x27;", "'") in page.replace(
            "&#34;", '"'
        )


class TestHeaders:
    @pytest.mark.parametrize("path", PAGES)
    def test_every_page_has_the_strict_policy(self, client: TestClient, path: str) -> None:
        """Each page comes with the CSP (no script, no inline style), nosniff, no framing, no
        caching, and has no inline script or style of its own."""
        sign_in(client, ADMIN)
        answer = client.get(path)
        assert answer.status_code == 200
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "script-src 'none'" in CONTENT_SECURITY_POLICY
        assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["cache-control"] == "no-store"
        assert "<script" not in answer.text
        assert "style=" not in answer.text
        assert "<style" not in answer.text


class TestQueries:
    def test_no_page_reads_the_reports_table_but_the_host_page(self, client: TestClient) -> None:
        """The overview, the host list and the findings never query reports; the host page
        reads its host's last reports only."""
        sign_in(client, ADMIN)
        engine = client.app.state.service.engine  # type: ignore[attr-defined]
        sent: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            sent.append(statement)

        event.listen(engine, "before_cursor_execute", record)
        try:
            for path in [
                "/dashboard/",
                "/dashboard/?days=90",
                "/dashboard/hosts?status=stale",
                "/dashboard/hosts?sort=last_report",
                "/dashboard/findings?state=all",
            ]:
                assert client.get(path).status_code == 200
            assert sent
            assert not [s for s in sent if re.search(r"\breports\b", s)]
            client.get("/dashboard/hosts/web-01")
            on_reports = [s for s in sent if re.search(r"\bFROM reports\b", s)]
            assert len(on_reports) == 1
            assert "reports.host_id =" in on_reports[0]
        finally:
            event.remove(engine, "before_cursor_execute", record)
