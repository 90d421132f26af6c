"""``fleetwatch-agent``: collect this host's facts, and report them to the collector.

fleetwatch-agent collect          print the report as JSON; send nothing
fleetwatch-agent run --once       collect and deliver one report
fleetwatch-agent run              report every interval until SIGTERM
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from agent import __version__
from agent.client import InsecureURLError
from agent.logs import configure_logging
from agent.settings import SettingsError, load_settings

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetwatch-agent", description=__doc__.split("\n")[0])
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"fleetwatch-agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_level, settings.log_format)

    from agent.runner import Agent

    try:
        agent = Agent(settings)
        if args.command == "collect":
            sys.stdout.write(agent.collect().model_dump_json(indent=2) + "\n")
            return 0
        if not settings.collector_url:
            print(
                "fleetwatch-agent: collector_url is not set (FLEETWATCH_COLLECTOR_URL)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        agent.client  # noqa: B018  (refuses an insecure URL before anything is collected)
        if args.once:
            return 0 if agent.run_once() else 1
        stop = threading.Event()

        def _stop(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        agent.run_forever(stop)
    except (InsecureURLError, SettingsError) as exc:
        print(f"fleetwatch-agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
