"""The one parser of the Authorization header."""

from __future__ import annotations

import pytest

from fleetwatch.collector.refusals import MissingToken
from fleetwatch.collector.web.bearer import bearer_token


class TestBearerToken:
    @pytest.mark.parametrize(
        ("header", "token"),
        [
            ("Bearer fw_h_abc", "fw_h_abc"),
            ("bearer fw_h_abc", "fw_h_abc"),
            ("BEARER   fw_h_abc  ", "fw_h_abc"),
        ],
    )
    def test_the_token_follows_the_scheme(self, header: str, token: str) -> None:
        """The scheme is case-insensitive; blanks around the token are not part of it."""
        assert bearer_token(header) == token

    @pytest.mark.parametrize(
        "header", [None, "", "Bearer", "Bearer    ", "Basic dXNlcjpwYXNz", "fw_h_abc"]
    )
    def test_anything_else_is_a_missing_token(self, header: str | None) -> None:
        """No header, another scheme or an empty token: refused as a missing token."""
        with pytest.raises(MissingToken):
            bearer_token(header)
