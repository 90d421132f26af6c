"""The write path: reports queue up, one writer thread stores them in batches.

Every request waits for its own report's answer, which comes only after the batch holding it
committed. Batching is what lets one collector take a thousand reports a second: a batch
costs a few statements and one commit whether it holds one report or a hundred. Under light
load a batch is a single report and nothing waits. The outcome of every write goes to
`ingest.readiness`, which tells a load balancer whether this collector can store reports.

Back-pressure: the queue knows what a report costs the writer (a moving average over recent
batches) and so how long a new report would wait. When that is longer than ``max_wait`` it
refuses the report at once with a Retry-After, rather than holding the request: the agent keeps
the report in its spool and comes back then. The Retry-After grows with the backlog and is
drawn at random over a range, so that a crowd refused together does not come back together.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from fleetwatch.collector.ingest.readiness import Readiness
from fleetwatch.collector.ingest.writer import Submission
from fleetwatch.collector.refusals import Overloaded, Refusal
from fleetwatch.schema import ReportAck

if TYPE_CHECKING:
    from fleetwatch.collector.ingest.writer import Ingestor
    from fleetwatch.schema import Report

log = structlog.get_logger(__name__)


@dataclass
class _Item:
    submission: Submission
    future: Future[ReportAck]


_STOP = object()
# Weight of the newest batch in the moving average of a report's cost to the writer.
_COST_WEIGHT = 0.2


class IngestQueue:
    def __init__(
        self,
        ingestor: Ingestor,
        max_batch: int = 128,
        max_waiting: int = 10_000,
        readiness: Readiness | None = None,
        max_wait: float = 2.0,
        retry_after_max: float = 120.0,
        rng: random.Random | None = None,
    ) -> None:
        self.ingestor = ingestor
        self.readiness = readiness or Readiness(ingestor.store)
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.retry_after_max = retry_after_max
        self._rng = rng or random.Random()  # noqa: S311  (spreading retries, not a secret)
        self._queue: queue.Queue[_Item | object] = queue.Queue(maxsize=max_waiting)
        self._thread: threading.Thread | None = None
        # seconds of writer time a report costs, measured; None until a batch was written
        self.report_cost: float | None = None

    @property
    def depth(self) -> int:
        """Reports waiting for the writer."""
        return self._queue.qsize()

    def expected_wait(self) -> float:
        """Seconds a report submitted now would wait behind others, by their recent cost."""
        if self.report_cost is None:
            return 0.0
        return self._queue.qsize() * self.report_cost

    def _retry_after(self, wait: float) -> float:
        """When to come back: past the backlog, spread over a range, within the cap."""
        low = min(max(wait, self.max_wait), self.retry_after_max)
        high = min(max(3 * wait, 2 * self.max_wait), self.retry_after_max)
        return self._rng.uniform(low, high)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ingest-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        """Store what is queued, then stop the writer."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    def submit(self, report: Report, token_host: str) -> Future[ReportAck]:
        if self._thread is None:
            raise Overloaded  # not started, or stopping: nothing would answer
        wait = self.expected_wait()
        if wait > self.max_wait:
            raise Overloaded(retry_after=self._retry_after(wait))
        future: Future[ReportAck] = Future()
        item = _Item(Submission(report, token_host, datetime.now(UTC)), future)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            raise Overloaded(retry_after=self._retry_after(self.max_wait)) from None
        return future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            items = [i for i in batch if isinstance(i, _Item)]
            started = time.monotonic()
            self._write(items)
            if items:
                cost = (time.monotonic() - started) / len(items)
                previous = self.report_cost
                self.report_cost = (
                    cost if previous is None else previous + _COST_WEIGHT * (cost - previous)
                )
            if stop:
                return

    def _write(self, batch: list[_Item]) -> None:
        try:
            results = self.ingestor.ingest_batch([item.submission for item in batch])
        except Exception as exc:  # noqa: BLE001  (each report's request gets the error)
            if len(batch) > 1:
                # One report may be what breaks the batch: store the others one by one.
                for item in batch:
                    self._write([item])
                return
            self.readiness.failed(exc)
            log.warning(
                "report not stored",
                error=f"{type(exc).__name__}: {exc}"[:300],
                host_id=batch[0].submission.report.host_id,
            )
            batch[0].future.set_exception(exc)
            return
        if any(isinstance(r, ReportAck) and r.status == "stored" for r in results):
            # (a batch of duplicates and refusals commits nothing, which a full disk allows)
            self.readiness.succeeded()
        for item, result in zip(batch, results, strict=True):
            if isinstance(result, Refusal):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)
