"""Disk usage per real mount, memory and load average."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import psutil

from fleetwatch.schema import MemoryUsage, MountUsage, ResourcesData

if TYPE_CHECKING:
    from collections.abc import Callable

    from fleetwatch.schema import SectionName

# Read-only images are always full by construction; reporting them would flag every snap host.
_SKIP_FSTYPES = frozenset({"squashfs", "iso9660", "udf", "erofs"})


class ResourcesCollector:
    name: SectionName = "resources"

    def __init__(
        self,
        partitions: Callable[..., list[Any]] = psutil.disk_partitions,
        usage: Callable[[str], Any] = psutil.disk_usage,
        memory: Callable[[], Any] = psutil.virtual_memory,
        load: Callable[[], tuple[float, float, float]] = os.getloadavg,
        cpu_count: Callable[[], int | None] = os.cpu_count,
    ) -> None:
        self.partitions = partitions
        self.usage = usage
        self.memory = memory
        self.load = load
        self.cpu_count = cpu_count

    def collect(self) -> ResourcesData:
        mounts = []
        seen = set()
        for part in self.partitions(all=False):
            if part.fstype in _SKIP_FSTYPES or part.mountpoint in seen:
                continue
            seen.add(part.mountpoint)
            try:
                usage = self.usage(part.mountpoint)
            except OSError:
                continue  # unmounted meanwhile, or not ours to read
            mounts.append(
                MountUsage(
                    mountpoint=part.mountpoint,
                    device=part.device,
                    fstype=part.fstype,
                    total_bytes=usage.total,
                    used_bytes=usage.used,
                    percent=min(100.0, max(0.0, float(usage.percent))),
                )
            )
        mounts.sort(key=lambda m: m.mountpoint)
        memory = self.memory()
        load = self.load()
        return ResourcesData(
            mounts=mounts,
            memory=MemoryUsage(
                total_bytes=memory.total,
                available_bytes=memory.available,
                percent=float(memory.percent),
            ),
            load_average=(round(load[0], 2), round(load[1], 2), round(load[2], 2)),
            cpu_count=self.cpu_count(),
        )
