"""What both command lines (``fleetwatch`` and ``fleetwatch-agent``) share: parsing and output.

``CommandParser`` answers a command group given without its subcommand the way a user types
it (``fleetwatch token: choose one of list, create, revoke``) instead of argparse's "the
following arguments are required: token_command". Every parser made from it, including each
group's subparsers, does so: a new command group needs nothing but ``add_subparsers(...,
required=True)``.

``quiet_broken_pipe`` lets output piped into ``head`` end without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

EXIT_USAGE = 2


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose required subcommands are asked for by name."""

    _required_commands: argparse._SubParsersAction[Any] | None = None

    def add_subparsers(self, **kwargs: Any) -> Any:
        # argparse checks required subparsers itself and names them by their dest; we check
        # after parsing, where the choices are known (subparsers are made with this class too)
        required = bool(kwargs.pop("required", False))
        kwargs.setdefault("parser_class", type(self))
        action = super().add_subparsers(required=False, **kwargs)
        if required:
            self._required_commands = action
        return action

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        action = self._required_commands
        if action is not None and getattr(parsed, action.dest, None) is None:
            self.missing_command(list(action.choices or ()))
        return parsed, extras

    def missing_command(self, choices: list[str]) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: choose one of {', '.join(choices)}\n")


def quiet_broken_pipe(run: Callable[[], int]) -> int:
    """``run()``'s exit status; a reader that went away (``| head``) ends it quietly.

    As the Python documentation advises (library/signal, "Note on SIGPIPE"): standard output
    is pointed at /dev/null so that the interpreter's final flush fails no more, and the
    status is 1 (the output was cut short).
    """
    try:
        code = run()
        sys.stdout.flush()  # inside the guard: buffered output may meet the closed pipe here
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return code
