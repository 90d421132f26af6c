"""Fetching vulnerability data from configured URLs, for fleets that may reach them.

Off by default (``vulnerability_urls`` empty): many fleets are air-gapped, and import by hand.
The housekeeper of the fleet fetches every URL into a temporary directory, bounded in size,
and imports the directory as one import: if any URL fails, nothing is replaced.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import requests

from fleetwatch.collector.vulns.model import DataFormatError

if TYPE_CHECKING:
    from fleetwatch.collector.storage.vulnerability_data import DatasetInfo
    from fleetwatch.collector.vulns.data import KnownVulnerabilities

CHUNK = 1 << 20
TIMEOUT = 120.0


class FetchError(DataFormatError):
    """A URL that could not be fetched; the message names it."""


def _file_name(index: int, url: str) -> str:
    name = Path(urlsplit(url).path).name or "data"
    if not name.endswith((".json", ".zip")):
        name += ".json"  # the tracker's URL ends in /json
    return f"{index:02d}-{name}"


def fetch(url: str, target: Path, max_bytes: int, session: requests.Session) -> None:
    """Download one URL to ``target``, refusing more than ``max_bytes``."""
    try:
        with session.get(url, stream=True, timeout=TIMEOUT) as response:
            if response.status_code != 200:
                msg = f"{url}: HTTP {response.status_code}"
                raise FetchError(msg)
            size = 0
            with target.open("wb") as out:
                for chunk in response.iter_content(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        msg = f"{url}: larger than {max_bytes} bytes"
                        raise FetchError(msg)
                    out.write(chunk)
    except requests.RequestException as exc:
        msg = f"{url}: {type(exc).__name__}"
        raise FetchError(msg) from exc


def refresh_from(
    known: KnownVulnerabilities,
    urls: list[str],
    max_bytes: int,
    session: requests.Session | None = None,
) -> list[DatasetInfo]:
    """Fetch every URL and import them together; raise before importing if one fails."""
    session = session or requests.Session()
    with tempfile.TemporaryDirectory(prefix="fleetwatch-vulns-") as directory:
        for i, url in enumerate(urls):
            fetch(url, Path(directory) / _file_name(i, url), max_bytes, session)
        return known.import_path(Path(directory), source=", ".join(urls))
