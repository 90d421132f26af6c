"""The admin command line's way to the collector's API."""

from __future__ import annotations

from typing import Any

import requests

from fleetwatch.endpoint import check_url, error_message, session_for


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
        try:
            response = self.session.request(
                method, self.url + path, timeout=self.timeout, verify=self.verify, **kwargs
            )
        except requests.RequestException as exc:
            msg = f"cannot reach the collector at {self.url}: {type(exc).__name__}"
            raise ApiError(msg) from exc
        if response.status_code >= 400:
            raise ApiError(error_message(response))
        return response.json()

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

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)
