"""Real receivers for notification tests: an HTTP server that checks webhook signatures, and
an SMTP server (aiosmtpd) that takes mail only over STARTTLS with a password."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.tls import Issued

# aiosmtpd warns of its own deprecated Session.login_data on every login it takes
logging.getLogger("mail.log").setLevel(logging.ERROR)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    """One POST as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    signed: bool  # the signature checked out under the receiver's secret, and is fresh

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """A webhook receiver on loopback, checking X-Fleetwatch-Signature as docs/notifications.md
    tells receivers to. ``stop()`` closes its port (the target is down); ``start()`` opens the
    same port again; ``status`` is what it answers."""

    def __init__(self, secret: str | None = None, port: int | None = None) -> None:
        self.secret = secret
        self.port = port or free_port()
        self.received: list[Received] = []
        self.status = 200
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def verify(self, headers: dict[str, str], body: bytes) -> bool:
        """The receiver's side of the signature: as docs/notifications.md shows it."""
        if self.secret is None:
            return False
        timestamp = headers.get("X-Fleetwatch-Timestamp", "")
        given = headers.get("X-Fleetwatch-Signature", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
            return False
        expected = hmac.new(
            self.secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        return hmac.compare_digest(given, f"sha256={expected}")

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0: a connection per request, so that stop() takes the receiver down
            # at once (a kept connection would outlive it)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = dict(self.headers.items())
                with receiver._lock:
                    status = receiver.status
                    if status < 300:
                        receiver.received.append(
                            Received(self.path, headers, body, receiver.verify(headers, body))
                        )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def deliveries(self) -> list[int]:
        """The delivery ids received, in order."""
        with self._lock:
            return [int(r.headers["X-Fleetwatch-Delivery"]) for r in self.received]

    def bodies(self) -> list[Any]:
        with self._lock:
            return [r.json for r in self.received]


@dataclass
class _Mailbox:
    user: str
    password: str
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    tls_seen: list[bool] = field(default_factory=list)

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self.user
            and auth_data.password.decode() == self.password
        )
        if ok:
            self.logins.append(self.user)
        # handled=False: aiosmtpd answers a refusal with 535 itself
        return AuthResult(success=ok, handled=ok)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802  (aiosmtpd calls it by this name)
        self.tls_seen.append(session.ssl is not None)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        parsed = message_from_bytes(envelope.original_content, policy=policy.default)
        self.messages.append(parsed)  # type: ignore[arg-type]
        return "250 OK"


class SmtpReceiver:
    """An SMTP server on loopback that requires STARTTLS (with a certificate of the tests' CA)
    and AUTH before it takes a message."""

    def __init__(self, certificate: Issued, user: str = "fleetwatch", password: str = "pw") -> None:
        self.port = free_port()
        self.box = _Mailbox(user, password)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certificate.cert, certificate.key)
        self.controller = Controller(
            self.box,
            hostname="127.0.0.1",
            port=self.port,
            tls_context=context,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            authenticator=self.box.authenticate,
        )

    @property
    def messages(self) -> list[EmailMessage]:
        return self.box.messages

    def start(self) -> SmtpReceiver:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
