"""The agent's cycle: collect, spool, deliver in order; again every interval until stopped."""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import ValidationError

from fleetwatch.agent.client import (
    CollectorClient,
    DeliveryError,
    EnrollRefusedError,
    TokenRejectedError,
)
from fleetwatch.agent.collect import ReportBuilder, build_report, default_collectors
from fleetwatch.agent.spool import CorruptEntryError, Spool
from fleetwatch.agent.state import AgentState, SectionBase
from fleetwatch.schema import SECTION_NAMES, Delivery, Report, Sections

if TYPE_CHECKING:
    import threading

    from fleetwatch.agent.settings import AgentSettings

log = structlog.get_logger(__name__)

BACKOFF_BASE = 1.0
ROTATION_RETRY = 3600.0  # seconds before a failed token rotation is tried again


def backoff_delay(
    attempt: int,
    cap: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff with full jitter, capped, and never sooner than Retry-After."""
    ceiling = min(cap, BACKOFF_BASE * 2 ** min(attempt, 32))
    delay = (rng or random).uniform(0, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


class Agent:
    """One host's agent: its state directory, its collectors, its way to the collector."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        builder: ReportBuilder | None = None,
        client: CollectorClient | None = None,
    ) -> None:
        self.settings = settings
        self.host_id = settings.resolved_host_id
        self.state = AgentState(settings.state_dir)
        self.spool = Spool(
            settings.state_dir / "spool",
            settings.spool_max_reports,
            settings.spool_max_bytes,
        )
        self.builder = builder or ReportBuilder(
            default_collectors(settings), settings.collector_timeout
        )
        self._client = client
        self._rotation_failed_at: float | None = None

    @property
    def client(self) -> CollectorClient:
        if self._client is None:
            if not self.settings.collector_url:
                msg = "collector_url is not set (FLEETWATCH_COLLECTOR_URL)"
                raise DeliveryError(msg, retryable=False)
            self._client = CollectorClient(
                self.settings.collector_url,
                timeout=self.settings.http_timeout,
                ca_bundle=self.settings.ca_bundle,
                allow_insecure_http=self.settings.allow_insecure_http,
                proxy=self.settings.proxy,
            )
        return self._client

    # -- collecting ---------------------------------------------------------------------

    def collect(self, sequence: int | None = None) -> Report:
        """Run every collector once and assemble the report (nothing is stored or sent)."""
        sections = self.builder.collect_sections()
        return build_report(
            sections,
            host_id=self.host_id,
            instance_id=self.state.instance_id,
            sequence=sequence if sequence is not None else self.state.last_sequence + 1,
        )

    def collect_and_spool(self) -> Report:
        report = self.collect(sequence=self._next_sequence())
        dropped = self.spool.put(report.sequence, report.model_dump_json().encode())
        self._add_dropped(dropped)
        log.info(
            "report collected",
            sequence=report.sequence,
            errors=[n for n in SECTION_NAMES if (s := getattr(report.sections, n)) and s.error],
        )
        return report

    def _next_sequence(self) -> int:
        try:
            return self.state.next_sequence()
        except OSError as exc:
            # Keep counting in memory; the spool error tells the collector the disk is trouble.
            log.error("cannot save agent state", error=str(exc))
            return self.state.last_sequence

    def _add_dropped(self, count: int) -> None:
        try:
            self.state.add_dropped(count)
        except OSError as exc:
            log.error("cannot save agent state", error=str(exc))

    # -- delivering ---------------------------------------------------------------------

    def deliver(self, stop: threading.Event | None = None) -> int:
        """Send every spooled report in order; return how many were acknowledged.

        Raises DeliveryError when the collector cannot take them now; they stay spooled.
        """
        delivered = 0
        for entry in self.spool.pending():
            if stop is not None and stop.is_set():
                break
            try:
                report = Report.model_validate_json(self.spool.read(entry))
            except CorruptEntryError:
                self._add_dropped(1)
                continue
            except ValidationError as exc:
                self.spool.set_aside(entry, f"not a report: {exc.errors()[0]['msg']}")
                self._add_dropped(1)
                continue
            try:
                self._send(report)
            except DeliveryError as exc:
                if exc.retryable:
                    raise
                # The collector refuses this very report; it would block every later one.
                self.spool.set_aside(entry, str(exc))
                self._add_dropped(1)
                continue
            self.spool.remove(entry)
            delivered += 1
        return delivered

    def _send(self, report: Report) -> None:
        wire, dropped, hash_only = self._wire(report)
        token = self._token()
        try:
            ack = self.client.send_report(token, wire)
        except TokenRejectedError:
            log.error(
                "host token rejected by the collector; enrolling again",
                host_id=self.host_id,
            )
            self.state.token_path.replace(self.state.token_path.with_suffix(".rejected"))
            raise
        log.info("report delivered", sequence=report.sequence, status=ack.status)
        # which sections went as their hash alone, and which the collector asked for again:
        # how delta delivery works, for whoever debugs it, not for an operator's log
        log.debug(
            "report sections",
            sequence=report.sequence,
            hash_only=hash_only,
            missing=ack.missing,
        )
        if ack.missing:
            self.state.clear_bases()
        else:
            bases: dict[str, SectionBase] = {}
            for name, remote in ack.sections.items():
                section = getattr(report.sections, name)
                if section is not None and section.hash is not None:
                    bases[name] = SectionBase(local=section.hash, remote=remote)
            self.state.set_bases(bases)
        self._add_dropped(-dropped)

    def _wire(self, report: Report) -> tuple[bytes, int, list[str]]:
        """The report as sent: unchanged sections as the collector's hash, losses declared."""
        sections: dict[str, Any] = {}
        hash_only: list[str] = []
        for name in SECTION_NAMES:
            section = getattr(report.sections, name)
            if section is None:
                continue
            base = self.state.base(name)
            if section.data is not None and base is not None and base.local == section.hash:
                sections[name] = {"hash": base.remote}
                hash_only.append(name)
            else:
                sections[name] = section
        dropped = self.state.dropped
        wire = report.model_copy(
            update={
                "sections": Sections.model_validate(sections),
                "delivery": Delivery(dropped_reports=dropped, spool_error=self.spool.error),
            }
        )
        return wire.model_dump_json(exclude_none=True).encode(), dropped, hash_only

    def rotate_token(self) -> None:
        """Get a new host token and keep it; the old one works until the new one is used."""
        self.state.write_token(self.client.rotate_token(self._token()))
        log.info("host token rotated", host_id=self.host_id)

    def _rotation_due(self) -> bool:
        """Whether the token is older than token_max_age_days (and no recent try failed)."""
        age = self.state.token_age
        max_age = self.settings.token_max_age_days * 86400
        if not max_age or age is None or age <= max_age:
            return False
        failed = self._rotation_failed_at
        return failed is None or time.monotonic() - failed >= ROTATION_RETRY

    def _token(self) -> str:
        token = self.state.read_token()
        if token and self._rotation_due():
            try:
                token = self.client.rotate_token(token)
            except DeliveryError as exc:
                self._rotation_failed_at = time.monotonic()
                log.warning("token rotation failed; the current token stays in use", error=str(exc))
            else:
                self.state.write_token(token)
                log.info("host token rotated", host_id=self.host_id)
        if token:
            return token
        secret = self.settings.enroll_secret_value()
        if not secret:
            msg = "no host token yet and no enroll secret configured (FLEETWATCH_ENROLL_SECRET)"
            raise DeliveryError(msg, retryable=True)
        try:
            token = self.client.enroll(self.host_id, secret)
        except EnrollRefusedError as exc:
            # Retrying helps once an admin allows this host to enroll again.
            raise DeliveryError(
                f"enrollment refused: {exc}", retryable=True, status=exc.status
            ) from exc
        self.state.write_token(token)
        self.state.clear_bases()
        log.info("enrolled", host_id=self.host_id)
        return token

    # -- running ------------------------------------------------------------------------

    def run_once(self) -> bool:
        """Collect, spool and deliver once; True when everything spooled was delivered."""
        self.collect_and_spool()
        try:
            self.deliver()
        except DeliveryError as exc:
            log.error(
                "delivery failed; reports stay spooled",
                error=str(exc),
                pending=len(self.spool.pending()),
            )
            return False
        return True

    def run_forever(self, stop: threading.Event, rng: random.Random | None = None) -> None:
        """Report every interval (with jitter) until ``stop`` is set."""
        rng = rng or random.Random()  # noqa: S311  (jitter, not cryptography)
        interval, jitter = self.settings.interval, self.settings.jitter
        next_collect = time.monotonic()
        retry_at: float | None = None
        attempt = 0
        log.info(
            "agent started",
            host_id=self.host_id,
            interval=interval,
            collector=self.settings.collector_url,
        )
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_collect:
                self.collect_and_spool()
                next_collect = now + interval * rng.uniform(1 - jitter, 1 + jitter)
            if retry_at is None or time.monotonic() >= retry_at:
                try:
                    self.deliver(stop)
                except DeliveryError as exc:
                    attempt += 1
                    delay = backoff_delay(
                        attempt, self.settings.retry_max_delay, exc.retry_after, rng
                    )
                    retry_at = time.monotonic() + delay
                    log.warning(
                        "delivery failed, will retry",
                        error=str(exc),
                        retry_in=round(delay, 1),
                        attempt=attempt,
                        pending=len(self.spool.pending()),
                    )
                else:
                    attempt, retry_at = 0, None
            wake = next_collect if retry_at is None else min(next_collect, retry_at)
            stop.wait(max(0.0, wake - time.monotonic()))
        log.info("agent stopped", host_id=self.host_id)
