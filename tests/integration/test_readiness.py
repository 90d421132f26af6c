"""Readiness with the real collector process on SQLite: not ready while its disk is full or
its filesystem read-only, while liveness stays 200; ready again when writes succeed."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import CollectorProcess, full, make_report, section_data, wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]

HOST = "ready-01"
PROBE_AFTER = 2.0  # seconds without a write before /readyz probes


def _mount(*argv: str) -> None:
    subprocess.run(["mount", *argv], check=True, capture_output=True, timeout=60)


def _unmount(path: Path) -> None:
    done = subprocess.run(["umount", str(path)], check=False, capture_output=True, timeout=60)
    if done.returncode != 0:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True, timeout=60)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small tmpfs of our own at ``path``, unmounted whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small filesystem for the database")
    path.mkdir(mode=0o700)
    _mount("-t", "tmpfs", "-o", f"size={size},mode=700", "tmpfs", str(path))
    try:
        yield path
    finally:
        _unmount(path)


@contextlib.contextmanager
def ext4_that_fails(path: Path) -> Iterator[str]:
    """An ext4 filesystem on a loop device at ``path``, mounted ``errors=remount-ro``; yields
    the file that, written to, makes the kernel turn it read-only as after a disk error."""
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        pytest.skip("needs root and mkfs.ext4 for a filesystem that turns read-only")
    image = path.with_suffix(".img")
    with image.open("wb") as f:
        f.truncate(32 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    path.mkdir(mode=0o700)
    try:
        _mount("-o", "loop,errors=remount-ro", str(image), str(path))
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot mount a loop device here: {exc.stderr.decode().strip()}")
    try:
        device = Path(
            subprocess.run(
                ["findmnt", "-no", "SOURCE", str(path)], check=True, capture_output=True, text=True
            ).stdout.strip()
        ).name
        trigger = Path(f"/sys/fs/ext4/{device}/trigger_fs_error")
        if not trigger.exists():
            pytest.skip(f"the kernel has no {trigger}")
        yield str(trigger)
    finally:
        _unmount(path)
        image.unlink()


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` to the last byte; the filler file to free it."""
    filler = directory / "filler"
    block = b"\0" * 65536
    with filler.open("wb", buffering=0) as f:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    f.write(block[:size])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return filler


class Reporter:
    """A host reporting to the collector, each report with contents the collector lacks."""

    def __init__(self, collector: CollectorProcess) -> None:
        self.collector = collector
        enrolled = requests.post(
            collector.url + "/api/v1/enroll",
            json={"host_id": HOST, "enroll_secret": collector.enroll_secret},
            timeout=10,
        )
        enrolled.raise_for_status()
        self.token = enrolled.json()["token"]
        self.sequence = 0

    def report(self) -> requests.Response:
        """A report whose package list is new, so storing it needs new pages."""
        self.sequence += 1
        packages = section_data("packages")
        packages["packages"] = [
            [name, f"{version}+fw{self.sequence}", *rest]
            for name, version, *rest in packages["packages"]
        ]
        sections = make_report(HOST, self.sequence)["sections"]
        sections["packages"] = full("packages", packages)
        return requests.post(
            self.collector.url + "/api/v1/report",
            json=make_report(HOST, self.sequence, sections),
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
        )


def get(collector: CollectorProcess, path: str) -> requests.Response:
    return requests.get(collector.url + path, timeout=30)


def start(tmp_path: Path, database: Path) -> CollectorProcess:
    return CollectorProcess(
        tmp_path,
        f"sqlite:///{database}",
        extra_env={
            "FLEETWATCH_READY_PROBE_AFTER": str(PROBE_AFTER),
            # a full report every second is what this test sends, not a flood
            "FLEETWATCH_HOST_RATE": "100",
            "FLEETWATCH_HOST_BURST": "1000",
        },
    ).start()


def first_refused(reporter: Reporter, tries: int = 200) -> requests.Response:
    for _ in range(tries):
        response = reporter.report()
        if response.status_code != 200:
            return response
    pytest.fail(f"{tries} reports stored on a full disk")


def test_a_full_disk_makes_the_collector_not_ready(tmp_path: Path) -> None:
    """The database's filesystem full: reports get 503, /readyz says 503 and why (also after
    an idle probe) while /healthz stays 200; with space freed, readiness returns by itself
    (the probe) and reports are stored."""
    with tmpfs(tmp_path / "db", "8m") as mount:
        collector = start(tmp_path, mount / "fleetwatch.db")
        try:
            reporter = Reporter(collector)
            assert reporter.report().status_code == 200
            assert get(collector, "/readyz").json() == {"status": "ready"}

            filler = fill(mount)
            refused = first_refused(reporter)
            assert refused.status_code == 503, refused.text
            assert "retry-after" in refused.headers
            ready = get(collector, "/readyz")
            assert ready.status_code == 503
            assert ready.json()["status"] == "not ready"
            assert ready.json()["reason"] == "writes fail: database or disk is full"
            assert get(collector, "/healthz").status_code == 200
            assert reporter.report().status_code == 503  # still full: still refused
            time.sleep(PROBE_AFTER + 0.5)  # idle: the probe's own write does not fit either
            assert get(collector, "/readyz").status_code == 503

            filler.unlink()
            wait_until(
                "ready again", lambda: get(collector, "/readyz").status_code == 200, timeout=30
            )
            assert reporter.report().status_code == 200
            assert collector.process is not None
            assert collector.process.poll() is None
        finally:
            collector.stop()
        events = [e["event"] for e in log_events(collector)]
        assert "writes fail; not ready" in events
        assert "writes succeed again; ready" in events


def test_a_read_only_filesystem_makes_the_collector_not_ready(tmp_path: Path) -> None:
    """The kernel turns the database's filesystem read-only (as after a disk error): reports
    get 503, /readyz says 503 and why, also after an idle probe, while /healthz stays 200."""
    with ext4_that_fails(tmp_path / "db") as trigger:
        collector = start(tmp_path, tmp_path / "db" / "fleetwatch.db")
        try:
            reporter = Reporter(collector)
            assert reporter.report().status_code == 200
            Path(trigger).write_text("fleetwatch readiness test\n")

            assert reporter.report().status_code == 503
            ready = get(collector, "/readyz")
            assert ready.status_code == 503
            assert ready.json()["reason"].startswith("writes fail: ")
            assert get(collector, "/healthz").status_code == 200
            assert collector.api(f"/api/v1/hosts/{HOST}")["host_id"] == HOST  # reads work

            time.sleep(PROBE_AFTER + 0.5)  # idle: the probe's own write fails too
            assert get(collector, "/readyz").status_code == 503
        finally:
            collector.stop()


def log_events(collector: CollectorProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in collector.log.read_text().splitlines() if line[:1] == "{"]
