"""What the fleet-wide report rate limit costs the ingest writer.

    python -m benchmarks.rate_limits [--hosts 500] [--rounds 6] [--postgres URL]

A host's report bucket is kept on its row, which the writer locks for every report anyway:
taking the token adds no statement, only two columns to the host row's update. This stores
quiet reports (every section by hash but a fresh ``resources``, as real agents send between
changes) in batches of 64 through the real writer, in process, alternating rounds with the
shared bucket kept and with it off, and prints the process CPU per report of each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fleetwatch.collector.ingest.writer import Submission
from fleetwatch.collector.service import CollectorService
from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.schema import SECTION_TYPES, Report
from tests.helpers import full, make_report, section_data

BATCH = 64


def quiet(host_id: str, sequence: int, instance: str, load: float) -> Report:
    sections: dict[str, Any] = {
        name: {"hash": full(name, section_data(name))["hash"]} for name in SECTION_TYPES
    }
    resources = section_data("resources")
    resources["load_average"] = [load, load, load]
    sections["resources"] = full("resources", resources)
    return Report.model_validate(make_report(host_id, sequence, sections, instance_id=instance))


def run(database_url: str, hosts: int, rounds: int, tmp: Path) -> None:
    settings = CollectorSettings(database_url=database_url, data_dir=tmp, log_level="warning")
    service = CollectorService(settings)
    service.start()
    limiter = service.ingestor.host_limiter
    try:
        ids = [f"bench-{n:05d}" for n in range(hosts)]
        instance = uuid.uuid4().hex
        for host_id in ids:
            with service.store.write() as conn:
                service.store.hosts.create(conn, host_id, None, _now())
            first = Report.model_validate(make_report(host_id, 1, instance_id=instance))
            service.ingestor.ingest(first, host_id)
        sequence = 1
        figures: dict[str, list[float]] = {"kept": [], "off": []}
        for n in range(rounds * 2):
            mode = "kept" if n % 2 == 0 else "off"
            service.ingestor.host_limiter = limiter if mode == "kept" else None
            sequence += 1
            reports = [
                Submission(quiet(h, sequence, instance, (n % 7) / 10), h, _now()) for h in ids
            ]
            started = time.process_time()
            for i in range(0, len(reports), BATCH):
                service.ingestor.ingest_batch(reports[i : i + BATCH])
            figures[mode].append((time.process_time() - started) / len(reports) * 1000)
        for mode, values in figures.items():
            print(
                f"  bucket {mode:4}: {statistics.median(values):.3f} ms CPU per quiet report "
                f"(median of {len(values)} rounds of {hosts}; "
                f"{', '.join(f'{v:.3f}' for v in values)})"
            )
    finally:
        service.ingestor.host_limiter = limiter
        service.stop()


def _now() -> datetime:
    return datetime.now(UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--postgres", default=os.environ.get("FLEETWATCH_TEST_DATABASE_URL"))
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        print("SQLite")
        run(f"sqlite:///{tmp}/bench.db", args.hosts, args.rounds, Path(tmp))
        if args.postgres:
            print(f"PostgreSQL ({args.postgres.rsplit('/', 1)[-1]})")
            run(args.postgres, args.hosts, args.rounds, Path(tmp))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
