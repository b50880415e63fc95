"""host: this machine's CPU load, memory, disk space per mount and open files, against thresholds.

A hung network mount blocks statvfs for ever; each mount is its own phase, so the runner's
timeout names the mount that hangs. A mount that is missing or unreadable is a warning of its own:
the other figures are still worth seeing. Each figure is said once: as a warning when it is past
its threshold, else as a fact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psutil

from commands.probe.check import Check, Finding, percent

SYSTEM_FILES = Path("/proc/sys/fs/file-nr")   # Linux: allocated, free, maximum


def probe(check: Check) -> Finding:
    settings = check.probe
    facts: list[str] = []
    warnings: list[str] = []
    metrics: dict[str, Any] = {}

    check.enter("read", "reading the load average")
    cpus = psutil.cpu_count() or 1
    load = psutil.getloadavg()[0] / cpus
    metrics.update(load_per_cpu=round(load, 2), cpus=cpus)
    if load >= settings.load_per_cpu:
        warnings.append(f"load {load:.2f} per CPU of {cpus} (warning at {settings.load_per_cpu:g})")
    else:
        facts.append(f"load {load:.2f}/CPU ({cpus} CPUs)")

    check.enter("read", "reading memory use")
    memory = round(psutil.virtual_memory().percent)
    metrics["memory_pct"] = memory
    if memory >= settings.memory_pct:
        warnings.append(f"memory {memory}% used")
    else:
        facts.append(f"memory {memory}%")

    disks = {}
    for mount in _mounts(settings.mounts):
        check.enter("read", f"reading disk usage of {mount}")
        try:
            disks[mount] = round(psutil.disk_usage(mount).percent)
        except FileNotFoundError:
            warnings.append(f"mount {mount} not found")
        except OSError as error:
            warnings.append(f"mount {mount} not readable: {error.strerror or error}")
    metrics["disk_pct"] = disks
    warnings.extend(f"disk {mount} {used}% full" for mount, used in disks.items() if used >= settings.disk_pct)
    if roomy := {mount: used for mount, used in disks.items() if used < settings.disk_pct}:
        facts.append("disk " + ", ".join(f"{mount} {used}%" for mount, used in roomy.items()))

    check.enter("read", "counting open files")
    files = _open_files()
    metrics["open_files"] = {scope: {"used": used, "limit": limit} for scope, (used, limit) in files.items()}
    for scope, (used, limit) in files.items():
        share = percent(used, limit)
        if share >= settings.files_pct:
            warnings.append(f"open files {used:,}/{limit:,}, {share}% of the limit ({scope})")
        else:
            facts.append(f"open files {used:,}/{limit:,} ({scope})")
    return Finding(latency=None, facts=facts, warnings=warnings, metrics=metrics)


def _mounts(configured: tuple[str, ...]) -> list[str]:
    """The configured mounts, else every mounted device once (bind mounts of the same disk left out)."""
    if configured:
        return list(configured)
    seen, mounts = set(), []
    for partition in psutil.disk_partitions(all=False):
        if partition.device in seen:
            continue
        seen.add(partition.device)
        mounts.append(partition.mountpoint)
    return mounts or ["/"]


def _open_files() -> dict[str, tuple[int, int]]:
    """(in use, limit) for the whole system (Linux) and for this process."""
    counts = {}
    if SYSTEM_FILES.exists():
        allocated, free, maximum = (int(n) for n in SYSTEM_FILES.read_text().split())
        counts["system"] = (allocated - free, maximum)
    process = psutil.Process()
    if hasattr(process, "num_fds"):
        soft_limit = process.rlimit(psutil.RLIMIT_NOFILE)[0]
        if soft_limit > 0:
            counts["this process"] = (process.num_fds(), soft_limit)
    return counts
