"""The policy file's TOML: read fast, but accepted, refused and worded exactly as tomllib does."""

from __future__ import annotations

import math
import tomllib

import pytest

from fleetwatch.collector.compliance import policy_toml

# TOML 1.1 (or a byte order mark): toml-rs can read these, tomllib (TOML 1.0) refuses them
NOT_TOML_1_0 = [
    '[defaults]\nseverity = { allowed_ports = "high", }\n',
    '[defaults]\nseverity = { allowed_ports = "high",\n  failing_checks = "low" }\n',
    'a = "\\e"\n',
    'a = "\\x41"\n',
    "a = 12:30\n",
    "a = 2027-01-31T12:30\n",
    "\ufeff[defaults]\n",
]

VALUES = """\
offset = 2027-01-31T12:30:00+02:00
utc = 2027-01-31T12:30:00Z
local = 2027-01-31T12:30:00.123456
day = 2027-01-31
time = 07:32:00
large = 9223372036854775807
floats = [inf, -inf, 1e-7, 0.1]
text = '''
 brackets ]] in a string: [[ {{ '''
[[nested.list]]
a = [[1, 2], [{ b = "}" }]]  # a comment ]]
"""


class TestLoads:
    def test_values_are_tomllibs(self) -> None:
        """Dates, times (with their offsets), integers and floats come back as from tomllib."""
        assert policy_toml.loads(VALUES) == tomllib.loads(VALUES)
        nan = policy_toml.loads("a = nan\n")["a"]
        assert math.isnan(nan)

    def test_a_tomllib_document_is_read_by_the_fast_parser(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Where toml-rs is installed, a valid file does not go through tomllib."""
        pytest.importorskip("toml_rs")

        def refuse(text: str) -> None:
            raise AssertionError(text)

        monkeypatch.setattr(tomllib, "loads", refuse)
        assert policy_toml.loads(VALUES)["nested"]["list"][0]["a"][1] == [{"b": "}"}]

    @pytest.mark.parametrize("text", NOT_TOML_1_0)
    def test_only_toml_1_0_is_accepted_with_tomllibs_message(self, text: str) -> None:
        """What tomllib refuses is refused, with the words tomllib gives."""
        with pytest.raises(tomllib.TOMLDecodeError) as fast:
            policy_toml.loads(text)
        with pytest.raises(tomllib.TOMLDecodeError) as reference:
            tomllib.loads(text)
        assert str(fast.value) == str(reference.value)

    def test_deep_nesting_is_left_to_tomllib(self) -> None:
        """Arrays nested thousands deep raise tomllib's error rather than crash the process."""
        text = "a = " + "[" * 20_000 + "]" * 20_000 + "\n"
        with pytest.raises(RecursionError):
            policy_toml.loads(text)


class TestShallow:
    @pytest.mark.parametrize(
        ("text", "depth", "shallow"),
        [
            ('[hosts."a"]\ngroups = ["web"]\n', 2, True),
            ("a = [[[1]]]\n", 2, False),
            ("a = [[[1]]]\n", 3, True),
            ("a = \"[[[[\"\nb = '{{{'\n# [[[[\n", 1, True),
            ('a = """\n]]]]"""\nb = [[[1]]]\n', 2, False),
            ('a = """x""""\nb = [1]\n', 1, True),
            ("a = '''\n[[['''''\nb = [1]\n", 1, True),
            ("a = [1\n", 4, False),
            ("a = [1}\n", 4, False),
        ],
    )
    def test_counts_brackets_outside_strings_and_comments(
        self, text: str, depth: int, shallow: bool
    ) -> None:
        """Brackets in strings and comments nest nothing; unbalanced ones are not shallow."""
        assert policy_toml.shallow(text, depth) is shallow
