"""Talking to the collector over HTTP(S): enrollment and report delivery."""

from __future__ import annotations

import gzip
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

import requests
from pydantic import ValidationError

from fleetwatch import __version__
from fleetwatch.endpoint import (
    CollectorURLError,
    InsecureURLError,
    check_url,
    error_message,
    session_for,
)
from fleetwatch.schema import EnrollRequest, EnrollResponse, ReportAck

if TYPE_CHECKING:
    from pathlib import Path

COMPRESS_ABOVE = 4096

__all__ = [
    "CollectorClient",
    "CollectorURLError",
    "DeliveryError",
    "EnrollRefusedError",
    "InsecureURLError",
    "TokenRejectedError",
    "error_message",
    "parse_retry_after",
]


class DeliveryError(Exception):
    """The collector did not take the request.

    ``retryable`` is False when sending the same request again cannot succeed.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


class TokenRejectedError(DeliveryError):
    """The host token was refused (revoked, or unknown to this collector)."""


class EnrollRefusedError(DeliveryError):
    """Enrollment was refused: wrong secret, or the host id is already enrolled."""


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


class CollectorClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        ca_bundle: Path | None = None,
        allow_insecure_http: bool = False,
        proxy: str | None = None,
    ) -> None:
        self.base_url = check_url(base_url, allow_insecure_http=allow_insecure_http)
        self.timeout = timeout
        self.session = session_for(self.base_url, proxy=proxy)
        # Given with every request: requests lets REQUESTS_CA_BUNDLE override a session's
        # verify, and a configured CA bundle must win over the environment.
        self.verify: str | bool = str(ca_bundle) if ca_bundle else True
        self.session.headers["User-Agent"] = f"fleetwatch-agent/{__version__}"

    def _post(self, path: str, body: bytes, headers: dict[str, str]) -> requests.Response:
        try:
            return self.session.post(
                self.base_url + path,
                data=body,
                headers=headers,
                timeout=self.timeout,
                verify=self.verify,
            )
        except requests.exceptions.SSLError as exc:
            msg = f"TLS verification of {self.base_url} failed: {exc}"
            raise DeliveryError(msg[:500], retryable=True) from exc
        except requests.RequestException as exc:
            msg = f"collector unreachable: {type(exc).__name__}: {exc}"
            raise DeliveryError(msg[:500], retryable=True) from exc

    def enroll(self, host_id: str, secret: str) -> str:
        """Exchange the enrollment secret for this host's token."""
        body = EnrollRequest(host_id=host_id, enroll_secret=secret).model_dump_json().encode()
        response = self._post("/api/v1/enroll", body, {"Content-Type": "application/json"})
        if response.status_code in {401, 403, 409}:
            raise EnrollRefusedError(
                error_message(response), retryable=False, status=response.status_code
            )
        return self._token(response, "enrollment")

    def rotate_token(self, token: str) -> str:
        """A new token for this host; the current one works until the new one is used."""
        headers = {"Authorization": f"Bearer {token}"}
        response = self._post("/api/v1/token/rotate", b"", headers)
        if response.status_code == 401:
            raise TokenRejectedError(error_message(response), retryable=True, status=401)
        return self._token(response, "a token rotation")

    def _token(self, response: requests.Response, answering: str) -> str:
        self._raise_for_status(response)
        try:
            return EnrollResponse.model_validate_json(response.content).token
        except ValidationError as exc:
            msg = f"collector answered {answering} with something that is not a token"
            raise DeliveryError(msg, retryable=True) from exc

    def send_report(self, token: str, report_json: bytes) -> ReportAck:
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
        }
        body = report_json
        if len(body) > COMPRESS_ABOVE:
            body = gzip.compress(body, compresslevel=6, mtime=0)
            headers["Content-Encoding"] = "gzip"
        response = self._post("/api/v1/report", body, headers)
        if response.status_code == 401:
            raise TokenRejectedError(error_message(response), retryable=True, status=401)
        self._raise_for_status(response)
        try:
            return ReportAck.model_validate_json(response.content)
        except ValidationError as exc:
            msg = "collector answered with something that is not an acknowledgement"
            raise DeliveryError(msg, retryable=True) from exc

    @staticmethod
    def _raise_for_status(response: requests.Response) -> None:
        status = response.status_code
        if status < 400:
            return
        # 429 and 5xx are the collector's trouble: try again later. Any other 4xx means
        # this very request is wrong, and sending it again cannot help.
        retryable = status == 429 or status >= 500
        raise DeliveryError(
            error_message(response),
            retryable=retryable,
            status=status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
