"""Collect this host's facts, and report them to the fleetwatch collector.

fleetwatch-agent collect          print the report as JSON; send nothing
fleetwatch-agent run --once       collect and deliver one report
fleetwatch-agent run              report every interval until SIGTERM
fleetwatch-agent rotate-token     get a new host token now
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from fleetwatch import __version__
from fleetwatch.agent.client import CollectorURLError, DeliveryError
from fleetwatch.agent.secret_files import check_secret_files
from fleetwatch.agent.settings import DEFAULT_CONFIG, SettingsError, load_settings
from fleetwatch.command_line import EXIT_USAGE, CommandParser, quiet_broken_pipe
from fleetwatch.logs import configure_logging

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from types import FrameType

    from fleetwatch.agent.cycle import Agent
    from fleetwatch.agent.settings import AgentSettings


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="fleetwatch-agent", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"fleetwatch-agent {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML settings file (default: /etc/fleetwatch/agent.toml when it exists)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("collect", help="print this host's report as JSON and send nothing")
    run = commands.add_parser("run", help="report to the collector every interval")
    run.add_argument(
        "--once", action="store_true", help="collect and deliver one report, then exit"
    )
    commands.add_parser(
        "rotate-token",
        help="get a new host token now (the old one works until the new one is used)",
    )
    return parser


def _run(agent: Agent, once: bool) -> int:
    if once:
        return 0 if agent.run_once() else 1
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    agent.run_forever(stop)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"fleetwatch-agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_level, settings.log_format)

    from fleetwatch.agent.cycle import Agent

    try:
        agent = Agent(settings)
        return quiet_broken_pipe(lambda: _command(agent, args, settings))
    except (CollectorURLError, SettingsError) as exc:
        print(f"fleetwatch-agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DeliveryError as exc:  # rotate-token: the collector said no, or is away
        print(f"fleetwatch-agent: {exc}", file=sys.stderr)
        return 1


def _command(agent: Agent, args: argparse.Namespace, settings: AgentSettings) -> int:
    if args.command == "collect":
        sys.stdout.write(agent.collect().model_dump_json(indent=2) + "\n")
        return 0
    if not settings.collector_url:
        msg = "collector_url is not set (FLEETWATCH_COLLECTOR_URL)"
        raise SettingsError(msg)
    config = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    check_secret_files(settings, config)
    agent.client  # noqa: B018  (refuses an insecure URL before anything is collected)
    if args.command == "rotate-token":
        agent.rotate_token()
        print(f"fleetwatch-agent: host token of {agent.host_id} rotated")
        return 0
    return _run(agent, args.once)


if __name__ == "__main__":
    sys.exit(main())
