"""Every reason the collector refuses a request, as one tree of exceptions.

Domain code (identity, ingestion, body limits) raises these and knows nothing of HTTP; the web
edge (`fleetwatch.collector.web.answers`) turns each kind into a status code, for both doors.
The first level below `Refusal` is the kind of refusal (who is asking, what was sent, how
often, whether the collector can serve at all); below it, the specific refusals the domain
raises. Each carries a ``reason``, a stable machine-readable name to count refusals by (in
logs and metrics): ``detail`` is for people and may change, ``reason`` is not.
"""

from __future__ import annotations

from typing import ClassVar


class Refusal(Exception):  # noqa: N818  (named for what happened: UnknownToken, HostMismatch)
    """A request the collector will not carry out.

    ``detail`` says why, for the caller (text, or a list of validation errors); ``reason`` is
    the stable name of the refusal; ``retry_after`` the seconds after which trying again may
    succeed, where that is known. For the security log, what the refusal knows of the host
    involved: ``claimed_host``, the host id the request says it is or acts for (a report's or
    an enrollment's ``host_id``), and ``token_host``, the host its token belongs to.
    """

    reason: ClassVar[str] = "refused"
    default_detail: ClassVar[str] = "request refused"

    def __init__(
        self,
        detail: object = None,
        *,
        retry_after: float | None = None,
        claimed_host: str | None = None,
        token_host: str | None = None,
    ) -> None:
        self.detail: object = self.default_detail if detail is None else detail
        super().__init__(str(self.detail))
        self.retry_after = retry_after
        self.claimed_host = claimed_host
        self.token_host = token_host


# -- kinds --------------------------------------------------------------------------------


class Unauthenticated(Refusal):
    """The caller did not say who it is, or its token is not one we accept."""

    reason = "unauthenticated"


class Forbidden(Refusal):
    """The caller is known, but may not do this."""

    reason = "forbidden"


class NotFound(Refusal):
    """What the request names does not exist (or the caller may not see it)."""

    reason = "not_found"


class Conflict(Refusal):
    """The request contradicts what is already stored."""

    reason = "conflict"


class InvalidBody(Refusal):
    """The body cannot be read at all: not JSON, broken compression, cut short."""

    reason = "invalid_body"


class BadRequest(Refusal):
    """A parameter that cannot be read at all (a paging cursor not made by this API)."""

    reason = "bad_request"


class Unprocessable(Refusal):
    """The body (or a parameter) is well-formed but does not say something we accept."""

    reason = "unprocessable"


class TooLarge(Refusal):
    """The body is over the size limit."""

    reason = "too_large"


class TooSlow(Refusal):
    """The body did not arrive within the time limit."""

    reason = "too_slow"


class UnsupportedEncoding(Refusal):
    """The body is compressed in a way we do not read."""

    reason = "unsupported_encoding"


class TooManyRequests(Refusal):
    """The caller asks too often; ``retry_after`` says when it may ask again."""

    reason = "too_many_requests"


class Unavailable(Refusal):
    """The collector cannot serve anyone just now; the caller should try again shortly."""

    reason = "unavailable"


# -- who is asking ------------------------------------------------------------------------


class MissingToken(Unauthenticated):
    """No bearer token in the request."""

    reason = "missing_token"
    default_detail = "missing bearer token (Authorization: Bearer <token>)"


class UnknownToken(Unauthenticated):
    """A token that is unknown, revoked, or not of the kind this request needs."""

    reason = "unknown_token"
    default_detail = "token not accepted"


class HostNotEnrolled(Unauthenticated):
    """A report under a host token whose host is not (or no longer) enrolled."""

    reason = "host_not_enrolled"
    default_detail = "host is not enrolled"


class HostMismatch(Forbidden):
    """A report that names another host than the one its token belongs to."""

    reason = "host_mismatch"

    def __init__(self, token_host: str, claimed_host: str) -> None:
        super().__init__(
            f"this token belongs to host {token_host!r}; a host can only "
            f"report as itself, not as {claimed_host!r}",
            claimed_host=claimed_host,
            token_host=token_host,
        )


class AdminRequired(Forbidden):
    """A request that needs an admin token, made with a read token."""

    reason = "admin_required"
    default_detail = "this needs an admin token"


class FleetReaderRequired(Forbidden):
    """A request for something fleet-wide, made with a token limited to one unit."""

    reason = "fleet_reader_required"
    default_detail = "this needs a token that is not limited to a unit"


class FormTokenRejected(Forbidden):
    """A dashboard form sent without the token of the session it was shown in (CSRF)."""

    reason = "form_token_rejected"
    default_detail = "this form is out of date or was not sent from the dashboard; reload the page"


class EnrollSecretRejected(Forbidden):
    """An enrollment with a secret that is neither the fleet's nor an enrollment token."""

    reason = "enroll_secret_rejected"
    default_detail = "enrollment secret not accepted"


class EnrollUnitMismatch(Forbidden):
    """An enrollment secret of one unit, for a host the policy puts in another."""

    reason = "enroll_unit_mismatch"


class AlreadyEnrolled(Conflict):
    """An enrollment of a host that is enrolled and has no window to enroll again."""

    reason = "already_enrolled"


# -- what was asked for -------------------------------------------------------------------


class InvalidCursor(BadRequest):
    """A paging cursor that is malformed, altered, or made for another list or filters."""

    reason = "invalid_cursor"


class OffsetPaging(BadRequest):
    """``offset=`` on a list that pages by cursor: the caller would read its first page over
    and over."""

    reason = "offset_paging"


class NoSuchHost(NotFound):
    """A host id the collector does not know (or the caller may not see)."""

    reason = "no_such_host"


class NoSuchToken(NotFound):
    """An API token id that does not exist or is already revoked."""

    reason = "no_such_token"


class NoSuchSession(NotFound):
    """A dashboard session id that does not exist or has already ended."""

    reason = "no_such_session"


# -- what was sent ------------------------------------------------------------------------


class BodyNotJson(InvalidBody):
    reason = "body_not_json"


class BodyNotGzip(InvalidBody):
    reason = "body_not_gzip"


class BodyIncomplete(InvalidBody):
    """The client went away before the whole body arrived."""

    reason = "body_incomplete"
    default_detail = "client went away before sending the whole body"


class UnsupportedSchemaVersion(InvalidBody):
    """A report of a schema version this collector does not understand."""

    reason = "unsupported_schema_version"


class SchemaViolation(Unprocessable):
    """A body that does not match its schema; ``detail`` lists the errors."""

    reason = "schema_violation"


class InvalidRequest(Unprocessable):
    """Parameters or a JSON body the API's declared types do not accept; ``detail`` lists
    the errors."""

    reason = "invalid_request"


class AdminTokenWithUnit(Unprocessable):
    reason = "admin_token_with_unit"
    default_detail = "an admin token cannot be limited to a unit"


class BodyTooLarge(TooLarge):
    """A body over the size limit, as declared, as received, or once decompressed."""

    reason = "body_too_large"


class BodyTooSlow(TooSlow):
    reason = "body_too_slow"


# -- how often, and whether at all ----------------------------------------------------------


class HostRateLimited(TooManyRequests):
    """A host reporting more often than its rate allows."""

    reason = "host_rate_limited"


class EnrollRateLimited(TooManyRequests):
    """Too many enrollment attempts from one address."""

    reason = "enroll_rate_limited"
    default_detail = "too many enrollment attempts from this address"


class RotationRateLimited(TooManyRequests):
    """A host asking for new tokens more often than its rate allows."""

    reason = "rotation_rate_limited"
    default_detail = "this host rotates its token too often"


class AdminWriteRateLimited(TooManyRequests):
    """An API token making admin changes more often than its rate allows."""

    reason = "admin_write_rate_limited"
    default_detail = "too many admin changes with this token"


class Overloaded(Unavailable):
    """More reports are waiting than the collector will hold, or it is stopping."""

    reason = "overloaded"
    default_detail = "the collector is busy; try again shortly"


class DatabaseUnavailable(Unavailable):
    """The database does not answer, or no connection is free."""

    reason = "database_unavailable"
    default_detail = "database unavailable; try again shortly"


# -- the response to findings -------------------------------------------------------------


class ResponderRequired(Forbidden):
    """Acknowledging and setting due dates needs an admin or a respond token of the unit."""

    reason = "responder_required"
    default_detail = "this needs an admin token or a respond token of the finding's unit"


class NoSuchFinding(NotFound):
    reason = "no_such_finding"
    default_detail = "no such finding"


class NoSuchWaiver(NotFound):
    reason = "no_such_waiver"
    default_detail = "no such waiver"


class NoSuchUnit(NotFound):
    reason = "no_such_unit"
    default_detail = "no such unit"


class FindingClosed(Conflict):
    """The finding is resolved: there is nothing to acknowledge or to make due."""

    reason = "finding_closed"
    default_detail = "the finding is resolved"


class WaiverNotInForce(Conflict):
    reason = "waiver_not_in_force"
    default_detail = "the waiver is revoked or expired"


class InvalidWaiver(Unprocessable):
    """A waiver that names no known target or rule, or expires in the past."""

    reason = "invalid_waiver"


class RespondTokenWithoutUnit(Unprocessable):
    reason = "respond_token_without_unit"
    default_detail = "a respond token answers for one unit: give its unit"
