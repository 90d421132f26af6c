"""Tokens: random, shown once, stored only as their SHA-256.

Tokens carry 256 random bits, so a plain hash is enough to store them (no salt or slow hash
is needed, unlike for passwords), and looking one up by its hash reveals nothing about it.
Secrets given in settings are compared with ``hmac.compare_digest``, in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

HOST_PREFIX = "fwh_"
API_PREFIX = "fwa_"
ENROLL_PREFIX = "fwe_"


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"),
        expected.encode("utf-8", "surrogatepass"),
    )
