"""Who can see or forge what: tokens, scopes, identities, rates."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.collector.web.app import create_app
from tests.helpers import make_report, ports_section

ADMIN = "admin-token-for-access-tests"
SECRET = "fleet-enroll-secret"
POLICY = """
[defaults]
allowed_ports = ["tcp/22"]

[hosts."web-01"]
unit = "parks"

[hosts."db-01"]
unit = "water"
"""


class Client:
    def __init__(self, client: TestClient) -> None:
        self.client = client

    def call(self, method: str, path: str, token: str | None = ADMIN, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.request(method, path, headers=headers, **kwargs)

    def enroll(self, host_id: str, secret: str = SECRET) -> Any:
        return self.client.post(
            "/api/v1/enroll", json={"host_id": host_id, "enroll_secret": secret}
        )

    def report(self, token: str, body: dict[str, Any]) -> Any:
        return self.client.post(
            "/api/v1/report",
            content=json.dumps(body),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )

    def token(self, kind: str, unit: str | None = None) -> str:
        made = self.call(
            "POST", "/api/v1/tokens", json={"name": f"{kind} test", "kind": kind, "unit": unit}
        )
        assert made.status_code == 200, made.text
        return str(made.json()["token"])


def _client(database_url: str, tmp_path: Path, **settings: Any) -> Iterator[Client]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    config = CollectorSettings(
        database_url=database_url,
        policy=policy,
        admin_token=ADMIN,
        enroll_secret=SECRET,
        data_dir=tmp_path,
        **settings,
    )
    with TestClient(create_app(config)) as client:
        yield Client(client)


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[Client]:
    yield from _client(database_url, tmp_path)


def fleet(api: Client) -> dict[str, str]:
    tokens = {}
    for host in ("web-01", "db-01"):
        tokens[host] = api.enroll(host).json()["token"]
        sections = {"ports": ports_section(("tcp", "0.0.0.0", 22), ("tcp", "0.0.0.0", 8080))}
        assert api.report(tokens[host], make_report(host, 1, sections)).status_code == 200
    return tokens


class TestApiTokens:
    def test_read_token_reads_but_does_not_administer(self, api: Client) -> None:
        fleet(api)
        reader = api.token("read")
        assert reader.startswith("fwa_")
        assert len(api.call("GET", "/api/v1/hosts", reader).json()) == 2
        assert api.call("POST", "/api/v1/policy/reload", reader).status_code == 403
        refused = api.call("POST", "/api/v1/tokens", reader, json={"name": "x", "kind": "admin"})
        assert refused.status_code == 403
        assert refused.json()["detail"] == "this needs an admin token"
        assert api.call("POST", "/api/v1/hosts/web-01/revoke", reader).status_code == 403

    def test_unit_token_sees_only_its_unit(self, api: Client) -> None:
        fleet(api)
        parks = api.token("read", unit="parks")
        hosts = api.call("GET", "/api/v1/hosts", parks).json()
        assert [h["host_id"] for h in hosts] == ["web-01"]
        findings = api.call("GET", "/api/v1/findings", parks).json()
        assert {f["host_id"] for f in findings} == {"web-01"}
        assert api.call("GET", "/api/v1/findings", parks, params={"host_id": "db-01"}).json() == []
        assert api.call("GET", "/api/v1/hosts/db-01", parks).status_code == 404
        assert api.call("GET", "/api/v1/hosts/db-01/reports", parks).status_code == 404
        assert api.call("GET", "/api/v1/hosts/web-01", parks).status_code == 200

    def test_unit_token_is_refused_the_fleet_policy(self, api: Client) -> None:
        """The policy (its file, host count and groups) is the fleet's: a unit's reader gets
        403; a reader of the whole fleet sees it."""
        fleet(api)
        parks = api.token("read", unit="parks")
        refused = api.call("GET", "/api/v1/policy", parks)
        assert refused.status_code == 403
        assert refused.json() == {"detail": "this needs a token that is not limited to a unit"}
        policy = api.call("GET", "/api/v1/policy", api.token("read")).json()
        assert policy["hosts"] == 2
        assert policy["source"].endswith("policy.toml")

    def test_unit_token_learns_nothing_of_other_units(self, api: Client) -> None:
        """A host of another unit answers exactly as a host that does not exist, on every
        read endpoint, and no list or filter shows one."""
        fleet(api)
        parks = api.token("read", unit="parks")
        for path in ("/api/v1/hosts/{}", "/api/v1/hosts/{}/reports"):
            other = api.call("GET", path.format("db-01"), parks)
            missing = api.call("GET", path.format("nowhere-01"), parks)
            assert (other.status_code, other.json()["detail"]) == (
                missing.status_code,
                missing.json()["detail"].replace("nowhere-01", "db-01"),
            )
        queries: list[dict[str, Any]] = [
            {"unit": "water"},
            {"status": "noncompliant"},
            {},
        ]
        for params in queries:
            hosts = api.call("GET", "/api/v1/hosts", parks, params=params).json()
            assert {h["unit"] for h in hosts} <= {"parks"}
        everything = api.call("GET", "/api/v1/findings").json()
        assert {f["host_id"] for f in everything} == {"web-01", "db-01"}
        for params in [{"unit": "water"}, {"rule": "allowed_ports"}, {"open": "true"}, {}]:
            findings = api.call("GET", "/api/v1/findings", parks, params=params).json()
            assert {f["host_id"] for f in findings} <= {"web-01"}

    def test_admin_token_cannot_be_limited_to_a_unit(self, api: Client) -> None:
        refused = api.call(
            "POST", "/api/v1/tokens", json={"name": "x", "kind": "admin", "unit": "parks"}
        )
        assert refused.status_code == 422

    def test_revoked_token_is_refused_and_listed_as_revoked(self, api: Client) -> None:
        reader = api.token("read")
        (listed,) = [t for t in api.call("GET", "/api/v1/tokens").json() if t["kind"] == "read"]
        assert "token" not in listed  # the list never shows a token
        assert api.call("DELETE", f"/api/v1/tokens/{listed['id']}").status_code == 200
        assert api.call("GET", "/api/v1/hosts", reader).status_code == 401
        (listed,) = [t for t in api.call("GET", "/api/v1/tokens").json() if t["kind"] == "read"]
        assert listed["revoked_at"] is not None

    def test_tokens_are_stored_only_as_hashes(self, api: Client) -> None:
        tokens = fleet(api)
        secrets = [api.token("read"), api.token("enroll", unit="parks"), *tokens.values()]
        service = api.client.app.state.service  # type: ignore[attr-defined]
        with service.store.read() as conn:
            dump = " ".join(
                str(row)
                for table in ("host_tokens", "api_tokens")
                for row in conn.execute(text(f"SELECT * FROM {table}"))
            )
        for secret in secrets:
            assert secret not in dump


class TestHostIdentity:
    def test_unit_enrollment_secret(self, api: Client) -> None:
        """A unit's secret enrolls its own hosts, and only those."""
        parks_secret = api.token("enroll", unit="parks")
        assert parks_secret.startswith("fwe_")
        assert api.enroll("web-01", parks_secret).status_code == 200
        refused = api.enroll("db-01", parks_secret)
        assert refused.status_code == 403
        assert "unit 'water'" in refused.json()["detail"]
        assert api.enroll("new-01", parks_secret).status_code == 200
        hosts = {h["host_id"]: h for h in api.call("GET", "/api/v1/hosts").json()}
        assert hosts["new-01"]["unit"] == "parks"  # not in the policy: the secret's unit

    def test_enrollment_secret_is_not_an_api_token(self, api: Client) -> None:
        parks_secret = api.token("enroll", unit="parks")
        assert api.call("GET", "/api/v1/hosts", parks_secret).status_code == 401

    def test_revoked_host_stops_until_an_admin_allows_it_back(self, api: Client) -> None:
        token = api.enroll("web-01").json()["token"]
        assert api.call("POST", "/api/v1/hosts/web-01/revoke").json() == {"revoked": 1}
        assert api.report(token, make_report("web-01", 1)).status_code == 401
        assert api.enroll("web-01").status_code == 409  # the secret alone is not enough
        api.call("POST", "/api/v1/hosts/web-01/allow-reenroll", json={"minutes": 5})
        again = api.enroll("web-01").json()["token"]
        assert api.report(again, make_report("web-01", 1)).status_code == 200

    def test_rotation_has_no_gap(self, api: Client) -> None:
        """After a rotation both tokens work until the new one is used; then the old one stops."""
        old = api.enroll("web-01").json()["token"]
        rotated = api.call("POST", "/api/v1/token/rotate", old)
        assert rotated.status_code == 200
        new = rotated.json()["token"]
        assert api.report(old, make_report("web-01", 1)).status_code == 200
        assert api.report(new, make_report("web-01", 2)).status_code == 200
        service = api.client.app.state.service  # type: ignore[attr-defined]
        service.identity._host_tokens.clear()  # the cache keeps a token for 10 s at most
        assert api.report(old, make_report("web-01", 3)).status_code == 401
        assert api.report(new, make_report("web-01", 3)).status_code == 200

    def test_a_host_token_cannot_read(self, api: Client) -> None:
        token = api.enroll("web-01").json()["token"]
        assert api.call("GET", "/api/v1/hosts", token).status_code == 401


class TestRates:
    @pytest.fixture
    def limited(self, database_url: str, tmp_path: Path) -> Iterator[Client]:
        yield from _client(
            database_url,
            tmp_path,
            host_rate=0.01,
            host_burst=3,
            enroll_rate=0.01,
            enroll_burst=2,
            rotate_rate=0.01,
            rotate_burst=2,
            admin_write_rate=0.01,
            admin_write_burst=3,
        )

    def test_a_host_reporting_too_often_is_told_when_to_come_back(self, limited: Client) -> None:
        token = limited.enroll("web-01").json()["token"]
        codes = [limited.report(token, make_report("web-01", n)).status_code for n in range(1, 5)]
        assert codes == [200, 200, 200, 429]
        refused = limited.report(token, make_report("web-01", 5))
        assert int(refused.headers["Retry-After"]) >= 1

    def test_enrollment_attempts_are_limited_per_address(self, limited: Client) -> None:
        codes = [limited.enroll(f"h{n}", "wrong").status_code for n in range(3)]
        assert codes == [403, 403, 429]

    def test_a_host_rotating_too_often_is_told_when_to_come_back(self, limited: Client) -> None:
        """Token rotations beyond rotate_burst: 429 with Retry-After, and no token made."""
        token = limited.enroll("web-01").json()["token"]
        codes = [limited.call("POST", "/api/v1/token/rotate", token).status_code for _ in "abc"]
        assert codes == [200, 200, 429]
        refused = limited.call("POST", "/api/v1/token/rotate", token)
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.json() == {"detail": "this host rotates its token too often"}
        assert live_tokens(limited, "web-01") == 2

    def test_admin_writes_are_limited_per_token(self, limited: Client) -> None:
        """Every admin write counts against its token's admin_write_burst (429 beyond, with
        Retry-After); reads do not count, and another admin token has a budget of its own."""
        other_admin = limited.token("admin")
        writes = [
            limited.call("POST", "/api/v1/hosts/web-01/revoke").status_code,
            limited.call("POST", "/api/v1/policy/reload").status_code,
        ]
        assert writes == [200, 200]
        refused = limited.call("POST", "/api/v1/tokens", json={"name": "x", "kind": "read"})
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.json() == {"detail": "too many admin changes with this token"}
        assert limited.call("DELETE", "/api/v1/tokens/1").status_code == 429
        assert limited.call("GET", "/api/v1/tokens").status_code == 200
        assert limited.call("POST", "/api/v1/policy/reload", other_admin).status_code == 200


def live_tokens(api: Client, host_id: str) -> int:
    service = api.client.app.state.service  # type: ignore[attr-defined]
    with service.store.read() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM host_tokens WHERE host_id = :h AND revoked_at IS NULL"),
                {"h": host_id},
            ).scalar_one()
        )


class TestRotation:
    def test_a_host_holds_at_most_two_live_tokens(self, api: Client) -> None:
        """Rotating again and again with the same token leaves that token and the newest one
        live: each new rotation revokes the unused token of the one before."""
        old = api.enroll("web-01").json()["token"]
        fresh = [api.call("POST", "/api/v1/token/rotate", old).json()["token"] for _ in "abcd"]
        assert live_tokens(api, "web-01") == 2
        assert api.report(fresh[0], make_report("web-01", 1)).status_code == 401
        assert api.report(old, make_report("web-01", 1)).status_code == 200
        assert api.report(fresh[-1], make_report("web-01", 2)).status_code == 200

    def test_a_revoked_token_cannot_rotate_even_from_the_cache(self, api: Client) -> None:
        """Rotation checks the token in the database, whatever this process has cached."""
        old = api.enroll("web-01").json()["token"]
        assert api.report(old, make_report("web-01", 1)).status_code == 200  # now cached
        service = api.client.app.state.service  # type: ignore[attr-defined]
        with service.store.write() as conn:
            conn.execute(text("UPDATE host_tokens SET revoked_at = created_at"))
        assert service.identity.cached_host(old) == "web-01"
        refused = api.call("POST", "/api/v1/token/rotate", old)
        assert refused.status_code == 401
        assert live_tokens(api, "web-01") == 0
