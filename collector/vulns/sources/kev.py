"""CISA's Known Exploited Vulnerabilities catalogue (the JSON feed).

    {"title": "CISA Catalog of Known Exploited Vulnerabilities", "catalogVersion": "2024.05.30",
     "dateReleased": "2024-05-30T14:07:42.1692Z", "count": 1128,
     "vulnerabilities": [{"cveID": "CVE-2021-44228", "vendorProject": "Apache",
                          "product": "Log4j2", "dateAdded": "2021-12-10", ...}]}

It names CVEs, not packages: a match whose CVE is in the catalogue is marked exploited.
"""

from __future__ import annotations

import json
from typing import Any

from fleetwatch.collector.vulns.model import DataFormatError, Dataset

NAME = "kev"


def is_catalogue(document: Any) -> bool:
    """Whether a parsed JSON document looks like the KEV catalogue."""
    return (
        isinstance(document, dict)
        and "vulnerabilities" in document
        and ("catalogVersion" in document or "dateReleased" in document)
    )


def read(payload: bytes) -> Dataset:
    """The exploited CVEs, with the date each was added to the catalogue."""
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        msg = f"not valid JSON (truncated or broken): {exc}"
        raise DataFormatError(msg) from exc
    if not is_catalogue(document) or not isinstance(document["vulnerabilities"], list):
        msg = "not the KEV catalogue: no 'catalogVersion' and 'vulnerabilities' list"
        raise DataFormatError(msg)
    exploited = {}
    for i, item in enumerate(document["vulnerabilities"]):
        cve = item.get("cveID") if isinstance(item, dict) else None
        if not isinstance(cve, str) or not cve.startswith("CVE-"):
            msg = f"vulnerabilities[{i}]: no 'cveID'"
            raise DataFormatError(msg)
        exploited[cve] = str(item.get("dateAdded") or "")
    if not exploited:
        msg = "the KEV catalogue lists no vulnerability"
        raise DataFormatError(msg)
    return Dataset(NAME, exploited=exploited)
