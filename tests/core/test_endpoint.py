"""Collector URLs and sessions, shared by the agent and the admin command line: the URL is
checked as requests parses it, and plain HTTP never goes through a proxy by accident.
The proxy tests run real HTTP servers on loopback."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from fleetwatch.agent.client import CollectorClient
from fleetwatch.endpoint import CollectorURLError, InsecureURLError, check_url, session_for
from tests.helpers import needs_collector


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers 200 to anything and remembers the request line (absolute form via a proxy)."""

    seen: list[str]

    def do_GET(self) -> None:
        self.server.seen.append(self.requestline)  # type: ignore[attr-defined]
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[tuple[Any, Any]]:
    """A collector stand-in and a proxy stand-in, both plain HTTP servers on loopback."""
    made = []
    for _ in range(2):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        server.seen = []  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        made.append(server)
    yield made[0], made[1]
    for server in made:
        server.shutdown()
        server.server_close()


def url_of(server: Any) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


class TestCheckURL:
    @pytest.mark.parametrize(
        "url",
        [
            "http://collector.invalid\\@127.0.0.1:8470",  # loopback to urlsplit, not to requests
            "http://user:password@127.0.0.1:8470",
            "https://collector.invalid@fleetwatch.example",
            "ftp://127.0.0.1/",
            "http://",
        ],
    )
    def test_urls_that_mislead_or_do_not_parse_are_refused(self, url: str) -> None:
        """Backslashes, user names and passwords, other schemes and hostless URLs are refused."""
        with pytest.raises(CollectorURLError):
            check_url(url)

    @pytest.mark.parametrize("url", ["http://10.0.0.5:8470", "http://fleetwatch.example"])
    def test_plain_http_is_refused_to_anything_but_loopback(self, url: str) -> None:
        with pytest.raises(InsecureURLError, match="refusing plain HTTP"):
            check_url(url)
        assert check_url(url, allow_insecure_http=True) == url

    @pytest.mark.parametrize(
        "url", ["http://127.0.0.1:8470/", "http://[::1]:8470", "http://localhost", "https://a.b"]
    )
    def test_loopback_and_https_pass(self, url: str) -> None:
        assert check_url(url) == url.rstrip("/")

    @needs_collector
    def test_both_clients_check_the_same_way(self) -> None:
        """The agent's client and the admin API client refuse the same misleading URL."""
        from fleetwatch.collector.admin.client import ApiClient

        url = "http://collector.invalid\\@127.0.0.1:8470"
        with pytest.raises(CollectorURLError):
            CollectorClient(url)
        with pytest.raises(CollectorURLError):
            ApiClient(url, "fwa_token")


class TestProxies:
    def test_plain_http_to_loopback_ignores_proxy_variables(
        self, servers: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With HTTP_PROXY set, a loopback collector is still reached directly."""
        collector, proxy = servers
        monkeypatch.setenv("HTTP_PROXY", url_of(proxy))
        monkeypatch.setenv("http_proxy", url_of(proxy))
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert requests.Session().get(url_of(collector) + "/x", timeout=5).ok  # the trap is set
        assert len(proxy.seen) == 1  # plain requests would have gone through the proxy
        response = session_for(url_of(collector)).get(url_of(collector) + "/api", timeout=5)
        assert response.ok
        assert len(proxy.seen) == 1
        assert collector.seen[-1].startswith("GET /api ")

    def test_an_explicit_proxy_is_used(self, servers: tuple[Any, Any]) -> None:
        """The ``proxy`` setting sends requests through that proxy."""
        collector, proxy = servers
        session = session_for(url_of(collector), proxy=url_of(proxy))
        assert session.get(url_of(collector) + "/api", timeout=5).ok
        assert proxy.seen == [f"GET {url_of(collector)}/api HTTP/1.1"]

    def test_https_follows_the_environment_proxy(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An https:// collector is reached through the environment's proxy (a TLS tunnel)."""
        monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
        monkeypatch.setenv("https_proxy", "http://127.0.0.1:3128")
        session = session_for("https://fleetwatch.example:8470")
        assert session.proxies.get("https") == "http://127.0.0.1:3128"
        assert session.trust_env is False  # no .netrc credentials either


@needs_collector
class TestAdminCommandLine:
    def test_it_refuses_to_send_its_token_in_clear(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`fleetwatch hosts` against a plain-HTTP remote URL exits 2 and sends nothing."""
        from fleetwatch.collector.admin.cli import main as admin_main

        def no_request(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("no request may be sent")

        monkeypatch.setattr(requests.Session, "request", no_request)
        monkeypatch.setenv("FLEETWATCH_API_URL", "http://fleetwatch.example:8470")
        monkeypatch.setenv("FLEETWATCH_API_TOKEN", "fwa_secret")
        assert admin_main(["hosts"]) == 2
        err = capsys.readouterr().err
        assert "refusing plain HTTP" in err
        assert "fwa_secret" not in err
