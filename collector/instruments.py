"""The collector's own measurements: counters, gauges and histograms of what each process does.

Every layer counts what it does here (reports received, ingest latency, batch sizes, database
errors, refusals, policy reloads); `web.metrics` exposes them at ``/metrics`` beside the fleet
figures it reads from the database at scrape time.

They are `prometheus_client` metrics. ``fleetwatch serve`` runs them in the library's
multiprocess mode (it sets ``PROMETHEUS_MULTIPROC_DIR`` before a worker starts): each worker
writes its values to memory-mapped files in that directory and a scrape, whichever worker
answers it, adds up every worker's files. That is why each gauge here states how workers'
values combine (``multiprocess_mode``). Imported with no such directory (tests, one process)
they are plain in-memory metrics of this process.

Label values are fixed sets (outcomes, refusal reasons): never anything a client sends.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REPORTS_RECEIVED = Counter(
    "fleetwatch_reports_received",
    "Reports posted to the collector, by outcome: stored, duplicate (stored before), refused.",
    ["outcome"],
)
INGEST_LATENCY = Histogram(
    "fleetwatch_ingest_latency_seconds",
    "Seconds from a report joining the ingest queue to its batch being committed.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
INGEST_QUEUE_DEPTH = Gauge(
    "fleetwatch_ingest_queue_depth",
    "Reports waiting for the writer, summed over the collector's live processes.",
    multiprocess_mode="livesum",
)
INGEST_BATCH_SIZE = Histogram(
    "fleetwatch_ingest_batch_size",
    "Reports per batch the writer stored in one transaction.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
DATABASE_ERRORS = Counter(
    "fleetwatch_database_errors",
    "Database operations that failed: a batch of reports not stored (ingest) or a request "
    "answered 503 because the database failed (request).",
    ["where"],
)
REFUSALS = Counter(
    "fleetwatch_refusals",
    "Requests refused, by reason (the security log's reasons; written to the log or not).",
    ["reason"],
)
POLICY_RELOADS = Counter(
    "fleetwatch_policy_reloads",
    "Changes of the policy file each process read: loaded (now in force), rejected (the "
    "previous policy stays) or unchanged (the same policy written again). Every process "
    "reads the file: one change counts once per process.",
    ["outcome"],
)
POLICY_ERROR = Gauge(
    "fleetwatch_policy_error",
    "1 when the newest policy file was rejected and an older policy is in force, else 0.",
    multiprocess_mode="livemax",
)
