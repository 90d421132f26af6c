"""Acting on a finding from the dashboard: acknowledge and waive through CSRF-checked forms,
as the API would (the same casework), by those the API lets act, and nobody else."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from tests.collector.web.dashboard.fleet import ADMIN, api_token, csrf_of, sign_in
from tests.collector.web.dashboard.test_pages import api
from tests.collector.web.dashboard.test_waived import unit_cell


def finding_of(client: TestClient, host_id: str) -> dict[str, Any]:
    """One open finding of a host, as the API shows it."""
    found = api(client, "/api/v1/findings", host_id=host_id, open="true")
    assert found, host_id
    return dict(found[0])


def post(client: TestClient, path: str, **fields: str) -> Any:
    return client.post(path, data=fields, follow_redirects=False)


def act(client: TestClient, finding_id: int, action: str, **fields: str) -> str:
    """Send a finding's form as its page holds it; the page shown after."""
    page = client.get(f"/dashboard/findings/{finding_id}").text
    answer = post(
        client,
        f"/dashboard/findings/{finding_id}/{action}",
        csrf_token=csrf_of(page),
        **fields,
    )
    assert answer.status_code == 303, answer.text
    return client.get(answer.headers["location"]).text


def day(offset: int) -> str:
    return (datetime.now(UTC).date() + timedelta(days=offset)).isoformat()


class TestAcknowledge:
    def test_an_admin_acknowledges_with_a_note_and_due_date(self, client: TestClient) -> None:
        """The form acknowledges the finding: its page and the API say acknowledged, with
        the note, the due date (the end of the day given) and the event in its history."""
        finding = finding_of(client, "web-01")
        sign_in(client, ADMIN)
        page = act(client, finding["id"], "acknowledge", note="on it <b>now</b>", due=day(3))
        assert 'id="action-done"' in page
        assert re.search(r'id="finding-state"><span class="state state-acknowledged">', page)
        assert "on it &lt;b&gt;now&lt;/b&gt;" in page
        assert 'data-event="acknowledged"' in page
        after = api(client, f"/api/v1/findings/{finding['id']}")
        assert after["state"] == "acknowledged"
        due = datetime.fromisoformat(after["due_at"])
        assert due == datetime.combine(
            datetime.now(UTC).date() + timedelta(days=4), datetime.min.time(), UTC
        )

    def test_a_respond_token_of_the_unit_acknowledges(self, client: TestClient) -> None:
        """A parks responder sees the acknowledge form (not the waive form) on a parks
        finding and acknowledges it; a water responder cannot reach it."""
        finding = finding_of(client, "web-01")
        sign_in(client, api_token(client, "respond", "water"))
        assert client.get(f"/dashboard/findings/{finding['id']}").status_code == 404
        client.cookies.clear()
        sign_in(client, api_token(client, "respond", "parks"))
        page = client.get(f"/dashboard/findings/{finding['id']}").text
        assert 'id="acknowledge-form"' in page
        assert 'id="waive-form"' not in page
        act(client, finding["id"], "acknowledge", note="parks looks")
        assert api(client, f"/api/v1/findings/{finding['id']}")["state"] == "acknowledged"

    def test_a_reader_sees_no_action_and_a_forged_post_is_refused(self, client: TestClient) -> None:
        """A parks reader's finding page has no form; a POST sent anyway, with the reader's
        own CSRF token, is refused with a message, and one without a token is refused
        outright: the finding is unchanged."""
        finding = finding_of(client, "web-01")
        sign_in(client, api_token(client, "read", "parks"))
        page = client.get(f"/dashboard/findings/{finding['id']}").text
        assert "<form" not in page.split("<main", 1)[1].split("</main>", 1)[0]
        shown = act(client, finding["id"], "acknowledge", note="sneaky")
        assert "Acknowledging needs an admin or a respond token." in shown
        shown = act(client, finding["id"], "waive", reason="r", owner="o", expires=day(10))
        assert "Only an admin may waive a finding." in shown
        forged = post(client, f"/dashboard/findings/{finding['id']}/acknowledge", note="x")
        assert forged.status_code == 403
        after = api(client, f"/api/v1/findings/{finding['id']}")
        assert (after["state"], after["waiver_id"]) == ("open", None)

    def test_a_closed_finding_is_refused_with_a_message(self, client: TestClient) -> None:
        """Acknowledging an overdue date is allowed (it is overdue at once: the overview's
        overdue count and the API agree); a due date that is no date is refused by name."""
        finding = finding_of(client, "web-01")
        sign_in(client, ADMIN)
        shown = act(client, finding["id"], "acknowledge", due="yesterday")
        assert 'id="action-error"' in shown
        assert "due" in shown
        assert api(client, f"/api/v1/findings/{finding['id']}")["state"] == "open"
        act(client, finding["id"], "acknowledge", note="late", due=day(-2))
        assert api(client, f"/api/v1/findings/{finding['id']}")["overdue"] is True
        overview = client.get("/dashboard/").text
        parks = api(client, "/api/v1/units/parks")
        assert unit_cell(overview, "parks", "overdue") == parks["overdue_findings"] == 1
        listed = client.get("/dashboard/findings?state=overdue").text
        assert re.findall(r'<tr data-finding="(\d+)"', listed) == [str(finding["id"])]


class TestWaive:
    def test_an_admin_waives_with_a_mandatory_expiry(self, client: TestClient) -> None:
        """Without an expiry the form is refused by name and nothing is stored; with one the
        finding is waived (the API agrees), listed under waived, marked on its host's page,
        and no longer counted against its host."""
        finding = finding_of(client, "web-01")
        sign_in(client, ADMIN)
        shown = act(client, finding["id"], "waive", reason="lab host", owner="parks it")
        assert 'id="action-error"' in shown
        assert "expires_at" in shown
        assert api(client, "/api/v1/waivers") == []
        shown = act(
            client, finding["id"], "waive", reason="lab host", owner="parks it", expires=day(30)
        )
        assert 'id="action-done"' in shown
        assert 'id="finding-waiver"' in shown
        after = api(client, f"/api/v1/findings/{finding['id']}")
        assert after["waiver_id"] is not None
        waiver = api(client, f"/api/v1/waivers/{after['waiver_id']}")
        assert (waiver["scope"], waiver["target"], waiver["rule"]) == (
            "host",
            "web-01",
            finding["rule"],
        )
        waived = client.get("/dashboard/findings?state=waived").text
        assert re.findall(r'<tr data-finding="(\d+)"', waived) == [str(finding["id"])]
        opened = client.get("/dashboard/findings?state=open").text
        assert str(finding["id"]) not in re.findall(r'<tr data-finding="(\d+)"', opened)
        host = client.get("/dashboard/hosts/web-01").text
        assert f'<tr data-finding="{finding["id"]}" class="waived">' in host

    def test_waiving_a_past_date_is_refused_by_casework(self, client: TestClient) -> None:
        """An expiry in the past is the casework's refusal, shown as its message."""
        finding = finding_of(client, "web-01")
        sign_in(client, ADMIN)
        shown = act(client, finding["id"], "waive", reason="r", owner="o", expires=day(-1))
        assert "a waiver must expire in the future" in shown
        assert api(client, f"/api/v1/findings/{finding['id']}")["waiver_id"] is None
