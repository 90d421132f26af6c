from __future__ import annotations

from fleetwatch.collector.storage.text import storable


class TestStorable:
    def test_nul_becomes_the_replacement_character(self) -> None:
        """PostgreSQL text cannot hold NUL: it is stored as U+FFFD."""
        assert storable("a\x00b\x00") == "a\ufffdb\ufffd"

    def test_other_text_is_kept(self) -> None:
        """Anything else, control characters and non-ASCII included, is stored as sent."""
        assert storable("tab\there é ✓") == "tab\there é ✓"
