"""The admin command line's way to the collector's API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import requests

from fleetwatch.endpoint import check_url, error_message, session_for

if TYPE_CHECKING:
    from collections.abc import Iterator

# rows asked for per page when paging through a list (the API's largest page)
PAGE = 5000


class ApiError(Exception):
    """The API refused a request, or could not be reached."""


class ApiClient:
    def __init__(
        self,
        url: str,
        token: str | None,
        ca_bundle: str | None = None,
        timeout: float = 60.0,
        *,
        allow_insecure_http: bool = False,
        proxy: str | None = None,
    ) -> None:
        # an API token goes with every request: never in clear to anything but loopback
        self.url = check_url(url, allow_insecure_http=allow_insecure_http)
        self.timeout = timeout
        self.session = session_for(self.url, proxy=proxy)
        # given per request: requests lets REQUESTS_CA_BUNDLE override a session's verify
        self.verify: str | bool = ca_bundle or True
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            response = self.session.request(
                method, self.url + path, timeout=self.timeout, verify=self.verify, **kwargs
            )
        except requests.RequestException as exc:
            msg = f"cannot reach the collector at {self.url}: {type(exc).__name__}"
            raise ApiError(msg) from exc
        if response.status_code >= 400:
            raise ApiError(error_message(response))
        return response

    def text(self, path: str, **params: Any) -> str:
        """A GET answered with text (CSV, HTML), not JSON."""
        clean = {k: v for k, v in params.items() if v is not None}
        try:
            response = self.session.get(
                self.url + path, params=clean, timeout=self.timeout, verify=self.verify
            )
        except requests.RequestException as exc:
            msg = f"cannot reach the collector at {self.url}: {type(exc).__name__}"
            raise ApiError(msg) from exc
        if response.status_code >= 400:
            raise ApiError(error_message(response))
        response.encoding = "utf-8"
        return response.text

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=clean)

    def pages(self, path: str, limit: int | None = None, **params: Any) -> Iterator[list[Any]]:
        """A list endpoint's rows page by page, following its cursor (``X-Next-Cursor``)
        until the last page, or until ``limit`` rows came."""
        clean = {k: v for k, v in params.items() if v is not None}
        remaining = limit
        while remaining is None or remaining > 0:
            size = PAGE if remaining is None else min(PAGE, remaining)
            response = self._send("GET", path, params={**clean, "limit": size})
            rows = response.json()
            if remaining is not None:
                rows = rows[:remaining]
                remaining -= len(rows)
            yield rows
            cursor = response.headers.get("X-Next-Cursor")
            if not cursor or not rows:
                return
            clean["cursor"] = cursor

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)
