"""Reading a report body: JSON against the wire schema, and the schema versions we understand.

A body that is not JSON, or of a schema version this collector does not know, is refused as
unreadable (`InvalidBody`); one that does not match the schema lists what is wrong
(`SchemaViolation`), without echoing the input, which may be huge or hostile.
"""

from __future__ import annotations

import json

from pydantic import ValidationError

from fleetwatch.collector.refusals import BodyNotJson, SchemaViolation, UnsupportedSchemaVersion
from fleetwatch.schema import SUPPORTED_SCHEMA_VERSIONS, Report

MAX_ERRORS_SHOWN = 20


def validation_detail(exc: ValidationError) -> list[dict[str, object]]:
    """Validation errors without the offending input (which may be huge or hostile)."""
    return [
        {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
        for error in exc.errors(include_url=False, include_input=False)[:MAX_ERRORS_SHOWN]
    ]


def parse_report(body: bytes) -> Report:
    """Validate a report body; raise a refusal naming what is wrong."""
    try:
        report = Report.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if errors and errors[0]["type"] == "json_invalid":
            raise BodyNotJson(f"body is not valid JSON: {errors[0]['msg']}") from exc
        version = _schema_version(body)
        if (
            isinstance(version, int)
            and not isinstance(version, bool)
            and (version not in SUPPORTED_SCHEMA_VERSIONS)
        ):
            # say so rather than list the fields a report of another version lacks
            raise UnsupportedSchemaVersion(_version_message(version)) from exc
        raise SchemaViolation(validation_detail(exc)) from exc
    if report.schema_version not in SUPPORTED_SCHEMA_VERSIONS:
        raise UnsupportedSchemaVersion(_version_message(report.schema_version))
    return report


def _schema_version(body: bytes) -> object:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return data.get("schema_version") if isinstance(data, dict) else None


def _version_message(version: object) -> str:
    supported = ", ".join(str(v) for v in sorted(SUPPORTED_SCHEMA_VERSIONS))
    return f"unsupported schema_version {version!r}; this collector understands {supported}"
