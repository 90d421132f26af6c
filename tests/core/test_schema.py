"""The wire contract: old reports still parse; bounds refuse absurd reports."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from fleetwatch.schema import (
    SECTION_NAMES,
    SECTION_TYPES,
    SUPPORTED_SCHEMA_VERSIONS,
    PendingUpdate,
    Report,
    UpdatesData,
    section_hash,
)
from tests.helpers import BASE_REPORT, FIXTURES


class TestCompatibility:
    @pytest.mark.parametrize("path", sorted((FIXTURES / "reports").glob("v*.json")))
    def test_reports_of_every_supported_version_parse(self, path: Any) -> None:
        """A report captured from an agent of each schema version is still valid."""
        report = Report.model_validate_json(path.read_bytes())
        assert report.schema_version in SUPPORTED_SCHEMA_VERSIONS
        for name in SECTION_NAMES:
            section = getattr(report.sections, name)
            assert section is not None
            if section.data is not None:
                assert section_hash(section.data) == section.hash  # hashes stay stable

    def test_every_supported_version_has_a_captured_report(self) -> None:
        captured = {int(p.stem.split("-")[0][1:]) for p in (FIXTURES / "reports").glob("v*.json")}
        assert captured >= SUPPORTED_SCHEMA_VERSIONS


class TestSections:
    def test_a_section_is_data_hash_or_error(self) -> None:
        body = copy.deepcopy(BASE_REPORT)
        body["sections"]["ports"] = {}
        with pytest.raises(ValidationError, match="needs its hash"):
            Report.model_validate(body)
        body["sections"]["ports"] = {"error": "x", "hash": "0" * 64}
        with pytest.raises(ValidationError, match="neither data nor hash"):
            Report.model_validate(body)

    def test_unknown_fields_are_refused(self) -> None:
        body = copy.deepcopy(BASE_REPORT)
        body["surprise"] = 1
        with pytest.raises(ValidationError, match="Extra inputs"):
            Report.model_validate(body)


class TestBounds:
    def test_too_many_listeners(self) -> None:
        """A report with more listeners than the bound is refused before anything is stored."""
        listener = {"protocol": "tcp", "address": "0.0.0.0", "port": 1}
        with pytest.raises(ValidationError, match="at most 20000"):
            SECTION_TYPES["ports"].model_validate({"listeners": [listener] * 20_001})

    def test_overlong_strings(self) -> None:
        with pytest.raises(ValidationError, match="at most 255"):
            SECTION_TYPES["packages"].model_validate(
                {
                    "manager": "dpkg",
                    "packages": [["x" * 256, "1", "all", "x", "1"]],
                }
            )

    @pytest.mark.parametrize("host_id", ["", "a b", "../etc", "x" * 254, "-lead", "a/b"])
    def test_bad_host_ids(self, host_id: str) -> None:
        body = copy.deepcopy(BASE_REPORT)
        body["host_id"] = host_id
        with pytest.raises(ValidationError):
            Report.model_validate(body)


class TestHeldBackAndNewInstalls:
    def test_todays_updates_section_parses_with_the_new_fields_unset(self) -> None:
        """An updates section without held_back/new_installs parses, and hashes as before."""
        data = UpdatesData.model_validate(BASE_REPORT["sections"]["updates"]["data"])
        assert data.new_installs == []
        assert all(u.held_back is None and u.security_version is None for u in data.updates)
        assert section_hash(data) == BASE_REPORT["sections"]["updates"]["hash"]
        assert "held_back" not in data.model_dump_json()

    def test_held_back_update_and_new_install_cross_the_wire(self) -> None:
        """The new fields survive a round trip through JSON when they are set."""
        held = PendingUpdate(
            name="passwd",
            architecture="amd64",
            installed_version="1:4.13+dfsg1-1",
            candidate_version="1:4.13+dfsg1-1+deb12u1",
            security=True,
            security_version="1:4.13+dfsg1-1+deb12u1",
            held_back="held",
            reason="on hold",
        )
        new = PendingUpdate(name="linux-image-6.1.0-57-amd64", architecture="amd64",
                            candidate_version="6.1.193-1", security=True)  # fmt: skip
        data = UpdatesData(manager="apt", updates=[held], new_installs=[new])
        again = UpdatesData.model_validate_json(data.model_dump_json())
        assert again == data
        assert again.updates[0].held_back == "held"

    def test_unknown_held_back_kind_is_refused(self) -> None:
        """held_back is one of held, kept-back, pinned."""
        with pytest.raises(ValidationError, match="held_back"):
            PendingUpdate(name="x", architecture="all", candidate_version="1",
                          security=False, held_back="frozen")  # type: ignore[arg-type]  # fmt: skip
