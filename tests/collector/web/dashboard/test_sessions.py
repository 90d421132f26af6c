"""Signing in to the dashboard: the cookie, CSRF, expiry and revocation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from fleetwatch.collector.auth.tokens import token_hash
from tests.collector.web.dashboard.conftest import make_client
from tests.collector.web.dashboard.fleet import ADMIN, api_token, csrf_of, sign_in


class TestSignIn:
    def test_a_page_without_a_session_redirects_to_sign_in(self, client: TestClient) -> None:
        """Every page answers a browser without a session with a redirect to the sign-in form."""
        for path in [
            "/dashboard/",
            "/dashboard/hosts",
            "/dashboard/hosts/web-01",
            "/dashboard/findings",
            "/dashboard/sessions",
        ]:
            answer = client.get(path, follow_redirects=False)
            assert answer.status_code == 303, path
            assert answer.headers["location"] == "/dashboard/login"

    def test_the_root_leads_to_the_dashboard(self, client: TestClient) -> None:
        """/ no longer answers 404: it sends the browser to the dashboard."""
        answer = client.get("/", follow_redirects=False)
        assert (answer.status_code, answer.headers["location"]) == (303, "/dashboard/")

    def test_the_cookie_holds_a_session_id_never_the_token(self, client: TestClient) -> None:
        """The session cookie is HttpOnly, SameSite=Strict, scoped to /dashboard, and holds a
        random id whose hash alone is stored."""
        token = api_token(client, "read")
        answer = sign_in(client, token)
        assert answer.status_code == 303
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Path=/dashboard" in cookie
        assert "Secure" not in cookie  # plain HTTP here; see the TLS test
        session_id = client.cookies["fleetwatch_session"]
        assert token not in cookie
        rows = client.app.state.service.sessions.list()  # type: ignore[attr-defined]
        assert [r.session_hash for r in rows] == [token_hash(session_id)]
        assert session_id not in {r.csrf_token for r in rows}

    def test_the_cookie_is_secure_over_tls(self, database_url: str, tmp_path: Path) -> None:
        """Over https the session cookie also carries Secure."""
        for client in make_client(database_url, tmp_path):
            client.base_url = client.base_url.copy_with(scheme="https")
            answer = sign_in(client, ADMIN)
            assert "Secure" in answer.headers["set-cookie"]

    def test_a_wrong_token_is_told_and_opens_nothing(self, client: TestClient) -> None:
        """An unknown token (or a host token) gets the form again with a message."""
        answer = sign_in(client, "fwa_not-a-token")
        assert answer.headers["location"].startswith("/dashboard/login?error=")
        assert "fleetwatch_session" not in client.cookies
        assert client.app.state.service.sessions.list() == []  # type: ignore[attr-defined]

    def test_sign_in_without_the_form_token_is_refused(self, client: TestClient) -> None:
        """A sign-in POST from elsewhere (no form token matching its cookie) is refused."""
        answer = client.post("/dashboard/login", data={"token": ADMIN, "form_token": "forged"})
        assert answer.status_code == 403
        assert answer.json()["detail"].startswith("this form is out of date")


class TestForms:
    def test_sign_out_needs_the_session_csrf_token(self, client: TestClient) -> None:
        """Signing out without the session's CSRF token is refused and the session lives on;
        with it, the session ends."""
        sign_in(client, ADMIN)
        page = client.get("/dashboard/")
        refused = client.post("/dashboard/logout", data={"csrf_token": "guess"})
        assert refused.status_code == 403
        assert client.get("/dashboard/", follow_redirects=False).status_code == 200
        done = client.post(
            "/dashboard/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False
        )
        assert done.status_code == 303
        client.cookies.clear()
        assert client.get("/dashboard/", follow_redirects=False).status_code == 303

    def test_an_admin_ends_another_session_through_a_form(self, client: TestClient) -> None:
        """The sessions page's End button (with the CSRF token) ends that session."""
        reader = TestClient(client.app)
        sign_in(reader, api_token(client, "read"))
        sign_in(client, ADMIN)
        page = client.get("/dashboard/sessions")
        other = client.app.state.service.sessions.list()[-1]  # type: ignore[attr-defined]
        forged = client.post(f"/dashboard/sessions/{other.id}/revoke", data={})
        assert forged.status_code == 403
        assert reader.get("/dashboard/", follow_redirects=False).status_code == 200
        client.post(
            f"/dashboard/sessions/{other.id}/revoke", data={"csrf_token": csrf_of(page.text)}
        )
        assert reader.get("/dashboard/", follow_redirects=False).status_code == 303


class TestEnding:
    def test_a_session_expires(self, client: TestClient) -> None:
        """A session is over after dashboard_session_hours, and after dashboard_idle_minutes
        without a request."""
        sign_in(client, ADMIN)
        keeper = client.app.state.service.sessions  # type: ignore[attr-defined]
        session_id = client.cookies["fleetwatch_session"]
        now = datetime.now(UTC)
        assert keeper.find(session_id, now) is not None
        assert keeper.find(session_id, now + timedelta(minutes=61)) is None
        assert keeper.find(session_id, now + timedelta(hours=13)) is None

    def test_an_admin_revokes_a_session_through_the_api(self, client: TestClient) -> None:
        """DELETE /api/v1/sessions/{id} ends a session; listing shows it ended; again is 404."""
        sign_in(client, api_token(client, "read", "parks"))
        admin = {"Authorization": f"Bearer {ADMIN}"}
        listed = client.get("/api/v1/sessions", headers=admin).json()
        assert [(s["kind"], s["unit"], s["revoked_at"]) for s in listed] == [
            ("read", "parks", None)
        ]
        assert "session_hash" not in listed[0]
        assert "csrf_token" not in listed[0]
        ended = client.delete(f"/api/v1/sessions/{listed[0]['id']}", headers=admin)
        assert ended.status_code == 200
        assert client.get("/dashboard/", follow_redirects=False).status_code == 303
        again = client.delete(f"/api/v1/sessions/{listed[0]['id']}", headers=admin)
        assert again.status_code == 404

    def test_a_reader_may_not_list_or_end_sessions(self, client: TestClient) -> None:
        """The sessions API is for admins."""
        reader = {"Authorization": f"Bearer {api_token(client, 'read')}"}
        assert client.get("/api/v1/sessions", headers=reader).status_code == 403
        assert client.delete("/api/v1/sessions/1", headers=reader).status_code == 403

    def test_revoking_the_api_token_ends_its_sessions(self, client: TestClient) -> None:
        """A session lasts no longer than the API token it was opened with."""
        token = api_token(client, "read")
        sign_in(client, token)
        assert client.get("/dashboard/", follow_redirects=False).status_code == 200
        admin = {"Authorization": f"Bearer {ADMIN}"}
        token_id = client.get("/api/v1/tokens", headers=admin).json()[-1]["id"]
        client.delete(f"/api/v1/tokens/{token_id}", headers=admin)
        assert client.get("/dashboard/", follow_redirects=False).status_code == 303
