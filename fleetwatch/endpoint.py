"""The collector's endpoint as its two clients see it (the agent and the admin command line):
checking its URL, opening a session to it, and reading its refusals.

A URL is parsed by the parser requests itself uses (urllib3's ``parse_url``), so what is
checked is what will be connected to. A URL with a user name or password, or a backslash, is
refused outright: ``http://collector.invalid\\@127.0.0.1:8470`` reads as loopback to one
parser and connects to ``collector.invalid`` with another. Plain HTTP is refused to anything
but loopback unless the operator allows it.

Sessions ignore the environment (proxy variables, ``.netrc``): a token or an enrollment secret
over plain HTTP must not go to a proxy in clear because a variable happened to be set. An
``https://`` collector is reached through the environment's proxy, if any (the tunnel keeps
TLS end to end); an explicit ``proxy`` setting is used for either.
"""

from __future__ import annotations

import ipaddress

import requests
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url


class CollectorURLError(ValueError):
    """A collector URL that cannot be used; the message says why."""


class InsecureURLError(CollectorURLError):
    """Plain HTTP to a collector that is not on this host."""


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, allow_insecure_http: bool = False) -> str:
    """The collector's base URL without a trailing slash; refused with `CollectorURLError`."""
    if "\\" in url:
        raise CollectorURLError(f"collector URL {url!r} contains a backslash")
    try:
        parsed = parse_url(url)
    except LocationParseError as exc:
        raise CollectorURLError(f"collector URL {url!r} does not parse: {exc}") from exc
    if parsed.scheme not in {"http", "https"}:
        raise CollectorURLError(f"collector URL {url!r} must start with http:// or https://")
    if parsed.auth is not None:
        msg = f"collector URL {url!r} must not carry a user name or password"
        raise CollectorURLError(msg)
    if not parsed.host:
        raise CollectorURLError(f"collector URL {url!r} names no host")
    if parsed.scheme == "http" and not allow_insecure_http and not is_loopback_host(parsed.host):
        msg = (
            f"refusing plain HTTP to {url}: use https://, or set allow_insecure_http "
            "if this network is trusted"
        )
        raise InsecureURLError(msg)
    return url.rstrip("/")


def session_for(url: str, *, proxy: str | None = None) -> requests.Session:
    """A session to the collector at ``url`` (already checked) that trusts no environment."""
    session = requests.Session()
    session.trust_env = False
    if proxy:
        session.proxies = {"http": proxy, "https": proxy}
    elif url.startswith("https://"):
        session.proxies = requests.utils.get_environ_proxies(url)
    return session


def error_message(response: requests.Response) -> str:
    """What an error answer says, in one line: its detail, or the start of its body."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):  # validation errors: name the first one
        first = detail[0] if detail else {}
        loc = ".".join(str(p) for p in first.get("loc", ()))
        detail = f"{loc}: {first.get('msg', '')}"
    text = detail if isinstance(detail, str) else response.text[:300]
    return f"HTTP {response.status_code}: {text}"
