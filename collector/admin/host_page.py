"""One host in readable sections, as ``fleetwatch host NAME`` prints it.

The sections follow what an operator asks about a host, in that order: what it is (system),
what is wrong with it (findings), what it should install (updates, grouped by source package
as security advisories are), what it exposes (ports), what runs (services, checks), how full it
is (resources), and whether its reports arrive (delivery). Everything a host reported goes
through ``render.clean``/``render.table``; the full data, every package included, stays with
``--json``.
"""

from __future__ import annotations

from typing import Any

from fleetwatch.collector.admin.render import ago, clean, findings_table, table, updates_lines

# positions in a packages entry: [name, version, architecture, source, source version]
_NAME, _SOURCE = 0, 3


def host_page(host: dict[str, Any]) -> str:
    """The whole host as text: a heading per section, a line saying so when one is empty."""
    sections = host.get("sections") or {}
    parts = [
        _summary(host),
        _block("system", sections, _system),
        "findings\n"
        + _indent(findings_table(host["findings"]) if host.get("findings") else "no open findings"),
        _block("updates", sections, lambda d: _updates(d, _sources(sections))),
        _block("ports", sections, _ports),
        _block("services", sections, _services),
        _block("checks", sections, _checks),
        _block("resources", sections, _resources),
        "delivery\n" + _indent(_delivery(host, sections)),
    ]
    return "\n\n".join(parts)


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" if line else line for line in text.splitlines())


def _fields(pairs: list[tuple[str, object]]) -> str:
    width = max(len(label) for label, _ in pairs) + 1
    return "\n".join(f"{(label + ':').ljust(width)} {clean(value)}" for label, value in pairs)


def _summary(host: dict[str, Any]) -> str:
    return _fields(
        [
            ("host", host["host_id"]),
            ("unit", host.get("unit") or "-"),
            ("groups", ", ".join(host.get("groups") or []) or "-"),
            ("status", host["status"]),
            ("last report", ago(host.get("last_report_at"))),
            ("agent version", host.get("agent_version") or "-"),
        ]
    )


def _block(name: str, sections: dict[str, Any], show: Any) -> str:
    """A section's heading and its text; when it has no data, why not."""
    section = sections.get(name) or {}
    data = section.get("data")
    if section.get("error"):
        body = f"not collected: {clean(section['error'])}"
    elif section.get("missing"):
        body = f"not known: {clean(section['missing'])}"
    elif data is None:
        body = "not reported"
    else:
        body = show(data)
    return f"{name}\n{_indent(body)}"


def _system(data: dict[str, Any]) -> str:
    os_info = data.get("os") or {}
    kernel = str(data.get("kernel") or "-")
    if data.get("kernel_outdated"):
        kernel += f" (newer installed: {data.get('kernel_latest_installed') or '?'})"
    if data.get("reboot_required"):
        since = data.get("reboot_required_since")
        reboot = "yes" + (f", since {ago(since)}" if since else "")
        packages = data.get("reboot_required_packages") or []
        if packages:
            reboot += f" (for {', '.join(packages)})"
    else:
        reboot = "no"
    return _fields(
        [
            ("os", os_info.get("pretty_name") or os_info.get("id") or "-"),
            ("kernel", kernel),
            ("architecture", data.get("architecture") or "-"),
            ("hostname", data.get("hostname") or "-"),
            ("booted", ago(data.get("boot_time"))),
            ("reboot needed", reboot),
        ]
    )


def _sources(sections: dict[str, Any]) -> dict[str, str]:
    """Binary package name -> source package name, from the packages section when it is held."""
    packages = ((sections.get("packages") or {}).get("data") or {}).get("packages") or []
    return {
        str(entry[_NAME]): str(entry[_SOURCE] or entry[_NAME])
        for entry in packages
        if len(entry) > _SOURCE
    }


def _updates(data: dict[str, Any], sources: dict[str, str]) -> str:
    updates = data.get("updates") or []
    refreshed = f"package index refreshed {ago(data.get('index_refreshed_at'))}"
    # what apt will not upgrade, and why; and packages it would newly install
    held_and_new = "".join(f"\n{line}" for line in updates_lines(data)[1:])
    if not updates:
        return f"no pending updates ({refreshed}){held_and_new}"
    groups: dict[str, list[dict[str, Any]]] = {}
    for update in updates:
        groups.setdefault(sources.get(update["name"], update["name"]), []).append(update)
    security = sum(1 for u in updates if u.get("security"))
    rows: list[list[object]] = []
    # security first, then by name: what to install first reads first
    for source, members in sorted(
        groups.items(), key=lambda item: (not any(u.get("security") for u in item[1]), item[0])
    ):
        first = members[0]
        rows.append(
            [
                source,
                "security" if any(u.get("security") for u in members) else "-",
                f"{first.get('installed_version') or '-'} -> {first['candidate_version']}",
                ", ".join(sorted(u["name"] for u in members)),
            ]
        )
    heading = (
        f"{len(updates)} pending ({security} security) in {len(groups)} source packages; "
        f"{refreshed}"
    )
    return heading + "\n" + table(["SOURCE", "KIND", "VERSION", "PACKAGES"], rows) + held_and_new


def _ports(data: dict[str, Any]) -> str:
    listeners = data.get("listeners") or []
    if not listeners:
        return "nothing listening"
    rows: list[list[object]] = [
        [
            f"{item['protocol']}/{item['port']}",
            item["address"],
            item.get("user") or "-",
            item.get("process") or "-",
        ]
        for item in sorted(listeners, key=lambda i: (i["protocol"], i["port"], i["address"]))
    ]
    return table(["PORT", "ADDRESS", "USER", "PROCESS"], rows)


def _services(data: dict[str, Any]) -> str:
    if not data.get("available"):
        return f"not known: {clean(data.get('reason') or 'no service manager')}"
    units = data.get("units") or []
    if not units:
        return f"no service units ({clean(data.get('manager') or '-')})"
    rows: list[list[object]] = [
        [u["name"], u.get("active") or "-", u.get("sub") or "-", u.get("enabled") or "-"]
        for u in sorted(units, key=lambda u: str(u["name"]))
    ]
    return table(["UNIT", "ACTIVE", "SUB", "ENABLED"], rows)


def _checks(data: dict[str, Any]) -> str:
    results = data.get("results") or []
    if not results:
        return "no checks configured"
    rows: list[list[object]] = [
        [r["name"], r["kind"], r["target"], "ok" if r["ok"] else f"FAILED: {r.get('reason') or ''}"]
        for r in results
    ]
    return table(["CHECK", "KIND", "TARGET", "RESULT"], rows)


def _resources(data: dict[str, Any]) -> str:
    memory = data.get("memory") or {}
    load = data.get("load_average") or []
    lines = [
        f"memory: {memory.get('percent', '-')}% used of {_size(memory.get('total_bytes'))}",
        f"load:   {', '.join(f'{x:g}' for x in load) or '-'}"
        + (f" on {data['cpu_count']} CPUs" if data.get("cpu_count") else ""),
    ]
    mounts = data.get("mounts") or []
    if mounts:
        rows: list[list[object]] = [
            [m["mountpoint"], m["fstype"], _size(m.get("total_bytes")), f"{m['percent']}%"]
            for m in mounts
        ]
        lines += ["", table(["MOUNT", "TYPE", "SIZE", "USED"], rows)]
    return "\n".join(lines)


def _size(count: object) -> str:
    if not isinstance(count, int | float):
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return "-"  # pragma: no cover  (the loop returns at TiB)


def _delivery(host: dict[str, Any], sections: dict[str, Any]) -> str:
    packages = (sections.get("packages") or {}).get("data") or {}
    pairs: list[tuple[str, object]] = [
        ("enrolled", ago(host.get("enrolled_at")) if host.get("enrolled_at") else "no"),
        (
            "last sequence",
            host.get("last_sequence") if host.get("last_sequence") is not None else "-",
        ),
        ("dropped", f"{host.get('dropped_reports') or 0} reports lost by the agent"),
        ("spool", host.get("spool_error") or "ok"),
    ]
    if packages:
        pairs.append(
            (
                "packages",
                (
                    f"{len(packages.get('packages') or [])} installed ({packages.get('manager')}); "
                    "listed with --json"
                ),
            )
        )
    return _fields(pairs)
