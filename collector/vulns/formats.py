"""Reading a file or directory of vulnerability data, its format told or detected.

Detection looks at the first bytes only (the tracker's file is tens of megabytes): the KEV
catalogue names ``catalogVersion``, an OSV record ``affected``, the tracker ``releases``.
A zip file is read as OSV records; a directory, as the ``.json`` and ``.zip`` files in it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

from fleetwatch.collector.vulns.model import DataFormatError, Dataset
from fleetwatch.collector.vulns.sources import debian_tracker, kev, osv

if TYPE_CHECKING:
    from pathlib import Path

Format = Literal["debian-tracker", "osv", "kev"]
FORMATS: tuple[Format, ...] = get_args(Format)
_HEAD = 65536


def detect(path: Path) -> Format:
    """The format of one file, from its name and first bytes."""
    if path.suffix == ".zip":
        return "osv"
    with path.open("rb") as stream:
        head = stream.read(_HEAD)
    if b'"catalogVersion"' in head or b'"cveID"' in head:
        return "kev"
    releases, affected = head.find(b'"releases"'), head.find(b'"affected"')
    if affected >= 0 and (releases < 0 or affected < releases):
        return "osv"
    if releases >= 0:
        return "debian-tracker"
    msg = f"{path}: cannot tell its format (give --format: {', '.join(FORMATS)})"
    raise DataFormatError(msg)


def read_path(path: Path, fmt: Format | None = None) -> list[Dataset]:
    """Every data set in a file or directory, read in full; nothing is stored here."""
    files = (
        sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in {".json", ".zip"})
        if path.is_dir()
        else [path]
    )
    if not files:
        msg = f"{path}: no file to import"
        raise DataFormatError(msg)
    merged: dict[str, Dataset] = {}
    osv_records: list[tuple[str, bytes]] = []
    for file in files:
        try:
            kind = fmt or detect(file)
            if kind == "osv":
                if file.suffix == ".zip":
                    osv_records.extend(osv.zip_members(file))
                else:
                    osv_records.append((str(file), file.read_bytes()))
                continue
            if kind == "kev":
                found = [kev.read(file.read_bytes())]
            else:
                with file.open("rb") as stream:
                    found = [debian_tracker.read(stream)]
        except OSError as exc:
            msg = f"{file}: cannot read: {exc.strerror}"
            raise DataFormatError(msg) from exc
        except DataFormatError as exc:
            if str(exc).startswith(str(file)):
                raise
            msg = f"{file}: {exc}"
            raise DataFormatError(msg) from exc
        _merge(merged, found)
    if osv_records:
        _merge(merged, osv.read_records(osv_records))
    return list(merged.values())


def _merge(merged: dict[str, Dataset], found: list[Dataset]) -> None:
    for dataset in found:
        have = merged.get(dataset.name)
        if have is None:
            merged[dataset.name] = dataset
        else:
            have.entries.extend(dataset.entries)
            have.exploited.update(dataset.exploited)
