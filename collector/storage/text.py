"""Agent text as the database can hold it."""

from __future__ import annotations


def storable(text: str) -> str:
    """Agent text made safe to store: PostgreSQL text cannot hold NUL, so NUL becomes U+FFFD."""
    return text.replace("\x00", "\ufffd")
