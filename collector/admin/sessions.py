"""`fleetwatch session list|revoke`: the dashboard's browser sessions, through the API."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleetwatch.collector.admin import render

if TYPE_CHECKING:
    import argparse


def cmd_session(args: argparse.Namespace) -> int:
    from fleetwatch.collector.admin.cli import _client

    client = _client()
    if args.session_command == "list":
        sessions = client.get("/api/v1/sessions")
        if args.json:
            print(render.to_json(sessions))
            return 0
        rows = [
            [
                s["id"],
                s["name"],
                s["kind"],
                s["unit"] or "-",
                s["created_at"][:19],
                s["last_seen_at"][:19],
                "ended" if s["revoked_at"] else "open until " + s["expires_at"][:19],
            ]
            for s in sessions
        ]
        print(render.table(["ID", "NAME", "KIND", "UNIT", "SINCE", "LAST SEEN", "STATE"], rows))
    else:
        print(render.clean(client.delete(f"/api/v1/sessions/{args.id}")["detail"]))
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    session = subparsers.add_parser("session", help="the dashboard's browser sessions")
    commands = session.add_subparsers(dest="session_command", required=True)
    listing = commands.add_parser("list", help="list sessions, ended ones included")
    listing.add_argument("--json", action="store_true")
    revoke = commands.add_parser("revoke", help="end a session (its browser signs in again)")
    revoke.add_argument("id", type=int)
    session.set_defaults(func=cmd_session)
