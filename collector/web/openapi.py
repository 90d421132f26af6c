"""The collector's OpenAPI document: FastAPI's, plus what it cannot see.

Agent bodies are read by hand (size, speed and compression are checked before parsing) and
POST /api/v1/report is served outside the framework (`web.report_door`), so their schemas and
answers are added here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi.openapi.utils import get_openapi

from fleetwatch.collector.web.report_door import REPORT_PATH
from fleetwatch.schema import EnrollRequest, Report, ReportAck

if TYPE_CHECKING:
    from fastapi import FastAPI
    from pydantic import BaseModel

_REPORT_ERRORS = {
    400: "Not JSON, not gzip, or an unsupported schema version",
    401: "No host token, or one that is unknown or revoked",
    403: "The report names another host than the token's",
    408: "The body did not arrive in time",
    413: "The body is over the size limit",
    415: "An unsupported Content-Encoding",
    422: "The report does not match the schema",
    429: "The host reports too often (see Retry-After)",
    503: "The database is unavailable or the collector is busy (see Retry-After)",
}


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with the agent bodies we read by hand described too."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    bodies: dict[str, type[BaseModel]] = {"Report": Report, "EnrollRequest": EnrollRequest}
    for name, model in bodies.items():
        model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(model_schema.pop("$defs", {}))
        components[name] = model_schema
    # POST /api/v1/report is served by the report door, outside the framework: describe it here
    schema["paths"][REPORT_PATH] = {
        "post": {
            "tags": ["agent"],
            "summary": "Report",
            "description": "Deliver one report; answered only after it is committed.",
            "operationId": "report",
            "x-fleetwatch-body": "Report",
            "security": [{"HostToken": []}],
            "responses": {
                "200": {
                    "description": "Stored (or stored before)",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ReportAck"}}
                    },
                },
                **{
                    str(code): {
                        "description": text,
                        "content": {
                            "application/json": {
                                "schema": {"type": "object", "properties": {"detail": {}}}
                            }
                        },
                    }
                    for code, text in _REPORT_ERRORS.items()
                },
            },
        }
    }
    components.update(
        ReportAck.model_json_schema(ref_template="#/components/schemas/{model}").pop("$defs", {})
    )
    components["ReportAck"] = ReportAck.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    schema["components"].setdefault("securitySchemes", {})["HostToken"] = {
        "type": "http",
        "scheme": "bearer",
    }
    for methods in schema.get("paths", {}).values():
        for operation in methods.values():
            body = operation.pop("x-fleetwatch-body", None)
            if body:
                operation["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}
                    },
                }
    app.openapi_schema = schema
    return schema
