"""Debian version ordering matches dpkg's."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwatch.debversion import (
    InvalidVersionError,
    compare,
    is_valid,
    parse,
    sort_key,
    validate,
)

ORDERED = [
    # (lower, higher)
    ("1.0~rc1", "1.0"),  # ~ sorts before the end of the string
    ("1.0~~", "1.0~"),
    ("1.0~~", "1.0~~a"),  # Debian policy: ~~ < ~~a < ~ < (end)
    ("1.0~~a", "1.0~"),
    ("2.0", "1:0.1"),  # any epoch beats no epoch
    ("1:9.9", "2:0.1"),
    ("1.0-1", "1.0-2"),  # revisions
    ("1.0-9", "1.0-10"),  # numerically, not lexically
    ("2.3-1", "2.30-1"),
    ("1.0a", "1.0+"),  # letters before other characters
    ("1.2.3", "1.2.3a"),
    ("1.0", "1.0.0"),
    ("3.0.11-1~deb12u2", "3.0.15-1~deb12u1"),
    ("7.88.1-10+deb12u5", "7.88.1-10+deb12u12"),
    ("1.0-1", "1.0-1ubuntu1"),
    ("2.35-0ubuntu3.1", "2.35-0ubuntu3.4"),
    ("1:2.34.1-1ubuntu1.10", "1:2.34.1-1ubuntu1.11"),
]
EQUAL = [
    ("1.0", "1.0-0"),
    ("0:1.0", "1.0"),
    ("1.0", "1.00"),
    ("1.01", "1.1"),
    ("+1:1.0", "1:1.0"),  # dpkg reads the epoch with strtol(): a sign is allowed
    ("-0:1.0", "1.0"),
    (" 1.0\t", "1.0"),  # leading and trailing space is no part of the version
]


class TestCompare:
    @pytest.mark.parametrize(("lower", "higher"), ORDERED)
    def test_orders_like_dpkg(self, lower: str, higher: str) -> None:
        """Each pair sorts lower before higher, in both directions."""
        assert compare(lower, higher) < 0
        assert compare(higher, lower) > 0

    @pytest.mark.parametrize(("a", "b"), EQUAL)
    def test_equal_versions(self, a: str, b: str) -> None:
        """Leading zeros, a zero epoch and an empty revision are no difference."""
        assert compare(a, b) == 0

    def test_sort_key_sorts_a_list(self) -> None:
        """sort_key gives the order dpkg would."""
        versions = ["1.0", "1.0~rc1", "1:0.5", "1.0-2", "0.9"]
        assert sorted(versions, key=sort_key) == ["0.9", "1.0~rc1", "1.0", "1.0-2", "1:0.5"]

    @pytest.mark.parametrize(
        "bad",
        ["", " ", "1 0", "a:1.0", "1:", "-1", "1.0-", "1:1.0-", "-1:1.0", "2147483648:1", ":1"],
    )
    def test_rejects_what_is_not_a_version(self, bad: str) -> None:
        """What dpkg calls bad syntax (an error, not a warning) is refused, with its reason."""
        with pytest.raises(InvalidVersionError):
            parse(bad)

    @pytest.mark.parametrize(("text", "why"), [("a1.0", "start with digit"),
                                               ("1.0_1", "version number"),
                                               ("1.0-a_b", "revision number")])  # fmt: skip
    def test_strict_validation_refuses_what_dpkg_warns_of(self, text: str, why: str) -> None:
        """dpkg orders a version it only warns of, but --validate-version refuses it."""
        parse(text)
        assert not is_valid(text)
        with pytest.raises(InvalidVersionError, match=why):
            validate(text)


version_text = st.from_regex(r"\A([0-9]:)?[0-9][0-9a-z.+~]{0,6}(-[0-9a-z.+~]{1,4})?\Z")


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs dpkg to compare against")
class TestAgainstDpkg:
    @settings(max_examples=150, deadline=None)
    @given(version_text, version_text)
    def test_agrees_with_dpkg_compare_versions(self, a: str, b: str) -> None:
        """For generated versions, the order is the one `dpkg --compare-versions` gives."""
        mine = compare(a, b)
        lower = subprocess.run(["dpkg", "--compare-versions", a, "lt", b], check=False)
        equal = subprocess.run(["dpkg", "--compare-versions", a, "eq", b], check=False)
        dpkg = -1 if lower.returncode == 0 else 0 if equal.returncode == 0 else 1
        assert (mine > 0) - (mine < 0) == dpkg

    @settings(max_examples=400, deadline=None)
    @given(st.text(alphabet=" \t:-+~._0123456789abzAZ\u00e9\u00a0\u0661", max_size=10))
    def test_valid_and_invalid_exactly_as_dpkg_says(self, text: str) -> None:
        """`dpkg --validate-version`: 0 is valid, 1 a warning only, 2 bad syntax; and what
        `dpkg --compare-versions` refuses to compare is what `parse` refuses."""
        dpkg = subprocess.run(
            ["dpkg", "--validate-version", "--", text], check=False, capture_output=True
        ).returncode
        assert is_valid(text) == (dpkg == 0)
        try:
            parse(text)
        except InvalidVersionError:
            refused = True
        else:
            refused = False
        assert refused == (dpkg == 2)  # dpkg's exit status for bad syntax
        if text.strip(" \t\n\v\f\r"):  # compare-versions takes "" for "no version"
            compared = subprocess.run(
                ["dpkg", "--compare-versions", "--", text, "eq", text],
                check=False,
                capture_output=True,
            ).returncode
            assert refused == (compared != 0)
