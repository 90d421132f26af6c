"""Sending one message to one target: an HTTP POST (signed JSON, Alertmanager's format,
Slack's) or an e-mail through the configured SMTP server. Any failure is `DeliveryFailed`,
whose message says what went wrong without the target's secrets (a URL may hold one).

The webhook signature, for a receiver to check (docs/notifications.md has the code)::

    X-Fleetwatch-Timestamp: 1764410400
    X-Fleetwatch-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>
    X-Fleetwatch-Delivery: 42        (also Idempotency-Key: the same for every attempt)
"""

from __future__ import annotations

import hashlib
import hmac
import smtplib
import ssl
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests

from fleetwatch import __version__
from fleetwatch.collector.notifications import messages
from fleetwatch.collector.notifications.config import Target, read_secret

if TYPE_CHECKING:
    from datetime import datetime

    from fleetwatch.collector.notifications.config import Smtp


class DeliveryFailed(Exception):  # noqa: N818  (named for what happened, as refusals are)
    """A target did not take a message; the message says why."""


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``timestamp.body`` under ``secret``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def send(  # noqa: PLR0913  (the message; then, by keyword, how to send it)
    target_name: str,
    target: Target,
    delivery: int,
    content: dict[str, Any],
    *,
    smtp: Smtp | None,
    external_url: str,
    now: datetime,
    http: requests.Session | None = None,
) -> str:
    """Send a message to a target now; what the target answered, or DeliveryFailed.

    ``http``: a session whose connections are kept between messages (the sender's own);
    without it, a connection for this message alone.
    """
    if target.kind == "email":
        if smtp is None:
            raise DeliveryFailed("no [smtp] in the notifications file")
        message = messages.email_message(delivery, content, smtp.sender, target.to, now)
        return _mail(smtp, message, target.to)
    if target.kind == "webhook":
        body = messages.webhook_body(delivery, content)
    elif target.kind == "alertmanager":
        body = messages.alertmanager_body(delivery, content, target_name, external_url)
    else:
        body = messages.slack_body(content)
    return _post(target, body, delivery, content["type"], now, http)


def _where(url: str) -> str:
    """A URL without what may be secret in it (path, query, credentials)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def _post(
    target: Target,
    body: bytes,
    delivery: int,
    kind: str,
    now: datetime,
    http: requests.Session | None,
) -> str:
    try:
        url = target.url or read_secret(target.url_file, "url_file")  # type: ignore[arg-type]
        secret = read_secret(target.secret_file, "secret_file") if target.secret_file else None
    except ValueError as exc:
        raise DeliveryFailed(str(exc)) from exc
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"fleetwatch/{__version__}",
        "X-Fleetwatch-Delivery": str(delivery),
        "Idempotency-Key": str(delivery),
        "X-Fleetwatch-Type": kind,
    }
    if secret is not None:
        timestamp = str(int(now.timestamp()))
        headers["X-Fleetwatch-Timestamp"] = timestamp
        headers["X-Fleetwatch-Signature"] = signature(secret, timestamp, body)
    where = _where(url)
    try:
        response = (http or requests).post(
            url,
            data=body,
            headers=headers,
            timeout=target.timeout,
            verify=str(target.ca_file) if target.ca_file else True,
            allow_redirects=False,  # a redirect would send the signed body somewhere unchecked
        )
    except requests.RequestException as exc:
        raise DeliveryFailed(f"{where}: {type(exc).__name__}") from exc
    if not 200 <= response.status_code < 300:
        raise DeliveryFailed(f"{where}: HTTP {response.status_code}")
    return f"{where}: HTTP {response.status_code}"


def _mail(smtp: Smtp, message: Any, to: list[str]) -> str:
    where = f"smtp {smtp.host}:{smtp.port}"
    try:
        password = smtp.password()
    except ValueError as exc:
        raise DeliveryFailed(str(exc)) from exc
    context = ssl.create_default_context(cafile=str(smtp.ca_file) if smtp.ca_file else None)
    try:
        client = (
            smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout, context=context)
            if smtp.security == "tls"
            else smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
        )
        with client:
            if smtp.security == "starttls":
                client.starttls(context=context)
            if smtp.username is not None and password is not None:
                client.login(smtp.username, password)
            refused = client.send_message(message, to_addrs=to)
    except smtplib.SMTPResponseException as exc:
        raise DeliveryFailed(f"{where}: {exc.smtp_code} {exc.smtp_error!r}"[:400]) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryFailed(f"{where}: {type(exc).__name__}: {exc}"[:400]) from exc
    if refused:
        # some addresses took it: sending again would repeat it to them
        return f"{where}: accepted, but refused {', '.join(sorted(refused))}"
    return f"{where}: accepted for {len(to)} address(es)"
