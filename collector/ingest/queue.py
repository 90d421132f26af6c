"""The write path: reports queue up, one writer thread stores them in batches.

Every request waits for its own report's answer, which comes only after the batch holding it
committed. Batching is what lets one collector take a thousand reports a second: a batch
costs a few statements and one commit whether it holds one report or a hundred. Under light
load a batch is a single report and nothing waits. The outcome of every write goes to
`ingest.readiness`, which tells a load balancer whether this collector can store reports.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from fleetwatch.collector import instruments
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
    queued: float  # time.monotonic() when it joined the queue


_STOP = object()


class IngestQueue:
    def __init__(
        self,
        ingestor: Ingestor,
        max_batch: int = 128,
        max_waiting: int = 10_000,
        readiness: Readiness | None = None,
    ) -> None:
        self.ingestor = ingestor
        self.readiness = readiness or Readiness(ingestor.store)
        self.max_batch = max_batch
        self._queue: queue.Queue[_Item | object] = queue.Queue(maxsize=max_waiting)
        self._thread: threading.Thread | None = None

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
        future: Future[ReportAck] = Future()
        item = _Item(Submission(report, token_host, datetime.now(UTC)), future, time.monotonic())
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            raise Overloaded from None
        instruments.INGEST_QUEUE_DEPTH.set(self._queue.qsize())
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
            instruments.INGEST_QUEUE_DEPTH.set(self._queue.qsize())
            self._write([i for i in batch if isinstance(i, _Item)])
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
            instruments.DATABASE_ERRORS.labels("ingest").inc()
            log.warning(
                "report not stored",
                error=f"{type(exc).__name__}: {exc}"[:300],
                host_id=batch[0].submission.report.host_id,
            )
            batch[0].future.set_exception(exc)
            return
        committed = time.monotonic()
        instruments.INGEST_BATCH_SIZE.observe(len(batch))
        for item in batch:
            instruments.INGEST_LATENCY.observe(committed - item.queued)
        if any(isinstance(r, ReportAck) and r.status == "stored" for r in results):
            # (a batch of duplicates and refusals commits nothing, which a full disk allows)
            self.readiness.succeeded()
        for item, result in zip(batch, results, strict=True):
            if isinstance(result, Refusal):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)
