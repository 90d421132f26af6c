"""``fleetwatch notify``: how the notification targets are doing, and a test message now.

fleetwatch notify status [--json]   each target: state, pending, sent, failed, latest error
fleetwatch notify test TARGET       send a test message to TARGET now and say what happened
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

# what `notify status` exits with when a target is failing, for a monitoring check to see
EXIT_FAILING = 3


def add_parser(subparsers: Any) -> None:
    notify = subparsers.add_parser("notify", help="notification targets: status and tests")
    commands = notify.add_subparsers(dest="notify_command", required=True)
    status = commands.add_parser(
        "status", help=f"how each target is doing (exits {EXIT_FAILING} if one is failing)"
    )
    status.add_argument("--json", action="store_true", help="print the API's JSON")
    status.set_defaults(func=cmd_status)
    test = commands.add_parser("test", help="send a test message to a target now")
    test.add_argument("target", help="a target of the notifications file, or unit:NAME")
    test.set_defaults(func=cmd_test)


def status_text(status: dict[str, Any]) -> str:
    """The status as a table, with the file's error and the failing targets under it."""
    from fleetwatch.collector.admin import render

    rows = [
        [
            t["target"],
            t["kind"],
            t["state"].upper() if t["state"] == "failing" else t["state"],
            t["pending"],
            t["sent"],
            t["failed"],
            render.ago(t["last_sent_at"]),
            render.clean(t["last_error"] or "-")[:80],
        ]
        for t in status["targets"]
    ]
    lines = [
        f"notifications file: {render.clean(status['source'])}",
        render.table(
            ["TARGET", "KIND", "STATE", "PENDING", "SENT", "FAILED", "LAST SENT", "LAST ERROR"],
            rows,
        )
        if rows
        else "no targets",
    ]
    if status["error"]:
        lines.append(f"newer file not loaded: {render.clean(status['error'])}")
    if status["failing"]:
        lines.append(f"failing: {', '.join(render.clean(t) for t in status['failing'])}")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    from fleetwatch.collector.admin import render
    from fleetwatch.collector.admin.cli import api_client

    status = api_client().get("/api/v1/notifications/status")
    print(render.to_json(status) if args.json else status_text(status))
    return EXIT_FAILING if status["failing"] else 0


def cmd_test(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    from fleetwatch.collector.admin import render
    from fleetwatch.collector.admin.cli import api_client

    answer = api_client().post(f"/api/v1/notifications/targets/{quote(args.target, safe='')}/test")
    word = "sent" if answer["ok"] else "NOT sent"
    print(f"{render.clean(answer['target'])}: {word}: {render.clean(answer['detail'])}")
    return 0 if answer["ok"] else 1
