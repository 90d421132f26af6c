"""Who is asking: hosts with their tokens, people and scripts with API tokens.

A host enrolls once with an enrollment secret and gets a token bound to its host id. An
enrolled host id cannot be enrolled again with the secret alone: an admin must open a window
for it (`fleetwatch host allow-reenroll`), so a leaked secret cannot take over a host.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

import structlog
from sqlalchemy.exc import IntegrityError

from fleetwatch.collector.auth.limits import FleetLimit
from fleetwatch.collector.auth.tokens import (
    API_PREFIX,
    ENROLL_PREFIX,
    HOST_PREFIX,
    new_token,
    same_secret,
    token_hash,
)
from fleetwatch.collector.compliance.placement import default_age
from fleetwatch.collector.rate_limits import RateLimiter
from fleetwatch.collector.refusals import (
    AdminTokenWithUnit,
    AdminWriteRateLimited,
    AlreadyEnrolled,
    EnrollRateLimited,
    EnrollSecretRejected,
    EnrollUnitMismatch,
    RespondTokenWithoutUnit,
    RotationRateLimited,
    UnknownToken,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from fleetwatch.collector.compliance.policy import PolicySource
    from fleetwatch.collector.settings import CollectorSettings
    from fleetwatch.collector.storage.store import Store
    from fleetwatch.collector.storage.tokens import ApiTokenRow

log = structlog.get_logger(__name__)

TokenKind = Literal["admin", "read", "respond", "enroll"]
TOKEN_CACHE_SIZE = 100_000  # a whole fleet's hosts
# How far back each look for revoked host tokens reaches before the previous one began: the
# clocks of collector machines differ, and a revocation commits a little after its time.
REVOCATION_OVERLAP = timedelta(seconds=60)


@dataclass(frozen=True)
class Principal:
    """An API caller: an admin, a reader of every unit or of one, or a responder for one
    unit (reads it, acknowledges its findings and sets their due dates)."""

    name: str
    kind: Literal["admin", "read", "respond"]
    unit: str | None = None
    # The API token's id; None for the bootstrap admin token of the settings.
    token_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"

    @property
    def key(self) -> str:
        """Who this caller is, for limits kept per caller: one key per token."""
        return "settings" if self.token_id is None else f"token {self.token_id}"

    def may_see(self, unit: str | None) -> bool:
        return self.unit is None or self.unit == unit

    @property
    def may_respond(self) -> bool:
        """Whether this caller may acknowledge findings and set due dates (of its unit)."""
        return self.is_admin or self.kind == "respond"


class Identity:
    """Enrollment, host tokens and API tokens, and how often each caller may change them.

    A host token checked in the database is kept for ``token_cache_seconds`` in this process
    (most reports then skip the look-up). Revocations are followed meanwhile: at most every
    ``token_revocation_check_seconds`` the process asks the database for the host tokens
    revoked since its last look (any process's revocations) and drops them, so a token revoked
    anywhere is refused here within about that long; one revoked here is forgotten at once.
    Enrollment attempts (per address), rotations (per host) and admin writes (per API token)
    are rate-limited across the fleet (`auth.limits`).
    """

    def __init__(
        self,
        store: Store,
        settings: CollectorSettings,
        policy: PolicySource,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.settings = settings
        self.policy = policy
        self.clock = clock  # what the token cache's deadlines are read against
        # host token hash -> (host id, valid until), soonest to expire first (each entry is
        # kept for the same time and moved to the end when renewed): most reports skip the
        # token look-up
        self._host_tokens: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._cache_lock = threading.Lock()  # the door may run in several threads
        self._revocations_lock = threading.Lock()  # one look for revocations at a time
        self._next_revocation_check = float("-inf")  # the first request looks
        self._revoked_since = datetime.now(UTC) - REVOCATION_OVERLAP
        # a host's report rate, shared through its row: the ingest writer takes from it, the
        # report door checks it (see `fleetwatch.collector.rate_limits`)
        self.host_reports = RateLimiter(settings.host_rate, settings.host_burst)
        self._enrollments = FleetLimit(store, "enroll", settings.enroll_rate, settings.enroll_burst)
        self._rotations = FleetLimit(store, "rotate", settings.rotate_rate, settings.rotate_burst)
        self._admin_writes = FleetLimit(
            store, "admin-write", settings.admin_write_rate, settings.admin_write_burst
        )

    # -- hosts --------------------------------------------------------------------------

    def _enroll_unit(self, secret: str) -> tuple[bool, str | None]:
        """Whether the secret may enroll hosts, and the unit it enrolls them into."""
        fleet_secret = self.settings.enroll_secret
        if fleet_secret is not None and same_secret(secret, fleet_secret.get_secret_value()):
            return True, None
        with self.store.read() as conn:
            row = self.store.api_tokens.active(conn, token_hash(secret))
        if row is not None and row.kind == "enroll":
            return True, row.unit
        return False, None

    def count_enrollment(self, address: str) -> None:
        """Count one enrollment attempt from ``address``; refuse it when that address tries
        more often than ``enroll_rate`` allows (guessing the secret stays slow)."""
        retry = self._enrollments.check(address)
        if retry is not None:
            raise EnrollRateLimited(retry_after=retry)

    def enroll(self, host_id: str, secret: str, now: datetime | None = None) -> str:
        """A new token for ``host_id``; raises a refusal when enrollment is not allowed."""
        now = now or datetime.now(UTC)
        allowed, secret_unit = self._enroll_unit(secret)
        if not allowed:
            raise EnrollSecretRejected(claimed_host=host_id)
        policy_unit = self.policy.current.for_host(host_id).unit
        if secret_unit is not None and policy_unit is not None and secret_unit != policy_unit:
            msg = (
                f"this enrollment secret is for unit {secret_unit!r}, but the policy puts "
                f"{host_id!r} in unit {policy_unit!r}"
            )
            raise EnrollUnitMismatch(msg, claimed_host=host_id)
        token = new_token(HOST_PREFIX)
        try:
            with self.store.write() as conn:
                host = self.store.hosts.get(conn, host_id, lock=True)
                if host is None:
                    self.store.hosts.create(conn, host_id, secret_unit or policy_unit, now)
                    self.store.placements.add_one(
                        conn, host_id, secret_unit or policy_unit, default_age(self.policy.current)
                    )
                elif host.reenroll_until is None or host.reenroll_until < now:
                    msg = (
                        f"host {host_id!r} is already enrolled; an admin must allow it to "
                        f"enroll again (fleetwatch host allow-reenroll {host_id})"
                    )
                    raise AlreadyEnrolled(msg, claimed_host=host_id)
                else:
                    self.store.host_tokens.revoke(conn, host_id, now)
                    self.store.hosts.set_reenroll(conn, host_id, None)
                    self._forget_host(host_id)
                self.store.host_tokens.add(conn, host_id, token_hash(token), now)
        except IntegrityError as exc:  # enrolled by a concurrent request meanwhile
            msg = f"host {host_id!r} is already enrolled"
            raise AlreadyEnrolled(msg, claimed_host=host_id) from exc
        log.info(
            "host enrolled",
            host_id=host_id,
            unit=secret_unit or policy_unit,
            again=host is not None,
        )
        return token

    def revocations_due(self) -> bool:
        """Whether the cache must look for revoked tokens before it answers again."""
        every = self.settings.token_revocation_check_seconds
        return every > 0 and self.clock() >= self._next_revocation_check

    def follow_revocations(self) -> None:
        """Drop from the cache the host tokens revoked since the last look, when one is due
        (at most every ``token_revocation_check_seconds``; otherwise nothing happens)."""
        if not self.revocations_due():
            return
        with self._revocations_lock:
            if not self.revocations_due():  # another thread looked meanwhile
                return
            started = datetime.now(UTC)
            checked_at = self.clock()
            with self.store.read() as conn:
                revoked = self.store.host_tokens.revoked_since(conn, self._revoked_since)
            with self._cache_lock:
                for digest in revoked:
                    self._host_tokens.pop(digest, None)
            # overlapping: a token checked (and cached) just before a revocation committed
            # is dropped by the next look if not by this one
            self._revoked_since = started - REVOCATION_OVERLAP
            self._next_revocation_check = checked_at + self.settings.token_revocation_check_seconds

    def cached_host(self, token: str) -> str | None:
        """The host of a token checked within ``token_cache_seconds``, without the database;
        None when not cached, or when a look for revocations is due (`follow_revocations`
        first: the answer might be a revoked token)."""
        if self.revocations_due():
            return None
        cached = self._host_tokens.get(token_hash(token))
        if cached is not None and cached[1] > self.clock():
            return cached[0]
        return None

    def host_for(self, token: str) -> str | None:
        """The host of a token, checked in the database (and cached)."""
        if not token.startswith(HOST_PREFIX):
            return None
        self.follow_revocations()
        digest = token_hash(token)
        with self.store.read() as conn:
            found = self.store.host_tokens.holder(conn, digest)
        if found is None:
            return None
        host_id, older_active, bucket = found
        if bucket is not None:
            # a process that has not seen this host lately learns its report bucket from the
            # same query: the fleet's state, not a full bucket of its own
            self.host_reports.adopt(host_id, bucket)
        if older_active:
            # The first use of a rotated token retires the tokens before it: until now the
            # agent might not have stored the new one, so the old ones had to keep working.
            with self.store.write() as conn:
                self.store.host_tokens.revoke(conn, host_id, datetime.now(UTC), except_hash=digest)
            self._forget_host(host_id)
            log.info("host token rotated", host_id=host_id)
        keep = self.settings.token_cache_seconds
        if keep > 0:
            self._cache(digest, host_id, self.clock() + keep)
        return host_id

    def _cache(self, digest: str, host_id: str, until: float) -> None:
        """Keep a checked token until then; O(1) amortised: the first entries are the
        soonest to expire, dropped when expired, or (the oldest) when the cache is full."""
        with self._cache_lock:
            tokens = self._host_tokens
            tokens.pop(digest, None)
            now = self.clock()
            while tokens and (
                next(iter(tokens.values()))[1] <= now or len(tokens) >= TOKEN_CACHE_SIZE
            ):
                tokens.popitem(last=False)
            tokens[digest] = (host_id, until)

    def _forget_host(self, host_id: str) -> None:
        """Drop cached tokens of a host whose tokens just changed."""
        with self._cache_lock:
            for digest, (cached_host, _) in list(self._host_tokens.items()):
                if cached_host == host_id:
                    self._host_tokens.pop(digest, None)

    def rotate(self, host_id: str, token: str, now: datetime | None = None) -> str:
        """A new token for ``host_id``, which asks with ``token`` (checked again here, in the
        database: a cached token may have been revoked meanwhile).

        The old token keeps working until the new one is first used: an agent that lost the
        answer (a crash, a dropped connection) still holds a valid token, so rotation never
        leaves a gap in reporting. A host holds at most two live tokens: the one it asks with
        and the newest issued. Asking again before using the new one revokes that one, never
        used (the agent lost it, or never stored it), and issues another; a host may ask
        ``rotate_burst`` times at once and ``rotate_rate`` times a second on average.
        """
        retry = self._rotations.check(host_id)
        if retry is not None:
            raise RotationRateLimited(retry_after=retry)
        now = now or datetime.now(UTC)
        digest = token_hash(token)
        fresh = new_token(HOST_PREFIX)
        with self.store.write() as conn:
            self.store.hosts.get(conn, host_id, lock=True)  # one rotation of a host at a time
            found = self.store.host_tokens.host_for(conn, digest)
            if found is None or found[0] != host_id:
                raise UnknownToken("host token not accepted")
            self.store.host_tokens.revoke(conn, host_id, now, except_hash=digest)
            self.store.host_tokens.add(conn, host_id, token_hash(fresh), now)
        self._forget_host(host_id)
        log.info("host token issued for rotation", host_id=host_id)
        return fresh

    def allow_reenroll(self, host_id: str, minutes: float, now: datetime | None = None) -> bool:
        now = now or datetime.now(UTC)
        with self.store.write() as conn:
            return self.store.hosts.set_reenroll(conn, host_id, now + timedelta(minutes=minutes))

    def revoke_host(self, host_id: str, now: datetime | None = None) -> int:
        with self.store.write() as conn:
            count = self.store.host_tokens.revoke(conn, host_id, now or datetime.now(UTC))
        self._forget_host(host_id)
        return count

    # -- API callers --------------------------------------------------------------------

    def principal_for(self, token: str) -> Principal | None:
        """The API caller of ``token``; None for any other token (a host's, an enrollment
        secret, an unknown or revoked one)."""
        admin = self.settings.admin_token
        if admin is not None and same_secret(token, admin.get_secret_value()):
            return Principal(name="bootstrap admin", kind="admin")
        if not token.startswith(API_PREFIX):
            return None
        with self.store.read() as conn:
            row = self.store.api_tokens.active(conn, token_hash(token))
        if row is None or row.kind not in {"admin", "read", "respond"}:
            return None
        return Principal(
            name=row.name,
            kind=row.kind,  # type: ignore[arg-type]
            unit=row.unit,
            token_id=row.id,
        )

    def count_admin_write(self, principal: Principal) -> None:
        """Count one admin write (a change through the API) of ``principal``; refuse it when
        the caller writes more often than ``admin_write_rate`` allows."""
        retry = self._admin_writes.check(principal.key)
        if retry is not None:
            raise AdminWriteRateLimited(retry_after=retry)

    def create_token(
        self, name: str, kind: TokenKind, unit: str | None, now: datetime | None = None
    ) -> tuple[int, str]:
        if kind == "admin" and unit is not None:
            raise AdminTokenWithUnit
        if kind == "respond" and unit is None:
            raise RespondTokenWithoutUnit
        token = new_token(ENROLL_PREFIX if kind == "enroll" else API_PREFIX)
        with self.store.write() as conn:
            token_id = self.store.api_tokens.add(
                conn,
                name=name,
                kind=kind,
                unit=unit,
                token_hash=token_hash(token),
                now=now or datetime.now(UTC),
            )
        return token_id, token

    def settings_tokens(self) -> list[tuple[str, str]]:
        """(name, kind) of the tokens set in the collector's settings, which the database
        does not hold: the bootstrap admin token and the fleet's enrollment secret."""
        found = []
        if self.settings.admin_token is not None:
            found.append(("FLEETWATCH_ADMIN_TOKEN", "admin"))
        if self.settings.enroll_secret is not None:
            found.append(("FLEETWATCH_ENROLL_SECRET", "enroll"))
        return found

    def list_tokens(self) -> list[ApiTokenRow]:
        with self.store.read() as conn:
            return self.store.api_tokens.all(conn)

    def revoke_token(self, token_id: int) -> bool:
        with self.store.write() as conn:
            return self.store.api_tokens.revoke(conn, token_id, datetime.now(UTC))
