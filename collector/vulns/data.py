"""The vulnerability data a collector holds: imported whole or not at all, and kept in memory.

An import reads every file in full first (`formats.read_path`); only data that parsed
entirely is written, each data set replacing its predecessor of the same name, all in one
transaction. A truncated or broken file therefore changes nothing.

Each process holds the data in memory as a `VulnIndex`. ``generation`` names what is stored
(the data sets' names and content hashes, read without the content), so a process notices an
import made by another one, or by ``fleetwatch vulns import``, with one small query.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fleetwatch.collector.storage.vulnerability_data import NewDataset
from fleetwatch.collector.vulns.formats import read_path
from fleetwatch.collector.vulns.matching import VulnIndex
from fleetwatch.collector.vulns.model import Dataset, Entry

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy import Connection

    from fleetwatch.collector.storage.store import Store
    from fleetwatch.collector.storage.vulnerability_data import DatasetInfo
    from fleetwatch.collector.vulns.formats import Format


def _dated(dataset: Dataset, previous: Dataset | None, now: datetime) -> Dataset:
    """The data set with each fix's ``known_since``: kept from the previous import of its
    name, now for a fix it did not have, and None throughout for the first import."""
    if previous is None:
        return dataset
    before: dict[tuple[str, str, str, str], datetime | None] = {
        e.key: e.known_since for e in previous.entries
    }
    entries: list[Entry] = [
        dataclasses.replace(e, known_since=before.get(e.key, now)) for e in dataset.entries
    ]
    return Dataset(dataset.name, entries, dataset.exploited)


def generation_of(infos: list[DatasetInfo]) -> str:
    """A name for the content of these data sets."""
    text = "\n".join(f"{i.name}:{i.sha256}" for i in sorted(infos, key=lambda i: i.name))
    return hashlib.sha256(text.encode()).hexdigest() if infos else ""


class KnownVulnerabilities:
    """The data sets in the database, imported through here and held in memory as an index."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.index = VulnIndex()
        self._lock = threading.Lock()

    def import_path(
        self,
        path: Path,
        fmt: Format | None = None,
        now: datetime | None = None,
        source: str | None = None,
    ) -> list[DatasetInfo]:
        """Import a file or directory; every data set in it replaces its predecessor at once.

        Raises `DataFormatError` (naming the file and what is wrong) before anything is
        written when any part does not parse.
        """
        datasets = read_path(path, fmt)
        now = now or datetime.now(UTC)
        names = {d.name for d in datasets}
        with self.store.write() as conn:
            new = []
            for dataset in datasets:
                previous = self._previous(conn, dataset.name)
                dated = _dated(dataset, previous, now)
                new.append(
                    NewDataset(dated.name, source or str(path), dated.payload(), dated.counts())
                )
            self.store.vulnerability_data.replace(conn, new, now)
            infos = self.store.vulnerability_data.infos(conn)
        return [i for i in infos if i.name in names]

    def _previous(self, conn: Connection, name: str) -> Dataset | None:
        payload = self.store.vulnerability_data.payload(conn, name)
        return None if payload is None else Dataset.from_payload(payload)

    def status(self) -> list[DatasetInfo]:
        """What is held: each data set's source, import time and counts."""
        with self.store.read() as conn:
            return self.store.vulnerability_data.infos(conn)

    def stored_generation(self) -> str:
        """The generation of the data in the database now."""
        return generation_of(self.status())

    def refresh(self) -> bool:
        """Load the stored data into memory if it changed; True when it did."""
        with self._lock:
            with self.store.read() as conn:
                infos = self.store.vulnerability_data.infos(conn)
                generation = generation_of(infos)
                if generation == self.index.generation:
                    return False
                datasets = []
                for info in infos:
                    payload = self.store.vulnerability_data.payload(conn, info.name)
                    if payload is not None:
                        datasets.append(Dataset.from_payload(payload))
            self.index = VulnIndex(datasets, generation)
            return True
