"""Files that hold secrets must be private: the agent will not start otherwise.

The host token is the agent's own and must be readable by the agent alone (mode 0600). A file
that holds the enrollment secret (the settings file, when the secret is in it, or the file
named by ``enroll_secret_file``) may be shared with the agent's group, as the deploy does
(root:fleetwatch 0640), but never with other users.
"""

from __future__ import annotations

import stat
import sys
from typing import TYPE_CHECKING

from fleetwatch.agent.settings import SettingsError
from fleetwatch.agent.state import TOKEN_FILE

if sys.version_info >= (3, 11):
    import tomllib
else:  # the agent runs on Python 3.9 and 3.10 too, where tomli is the same parser
    import tomli as tomllib

if TYPE_CHECKING:
    from pathlib import Path

    from fleetwatch.agent.settings import AgentSettings


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None


def _refuse(path: Path, mode: int, wanted: str) -> SettingsError:
    return SettingsError(
        f"refusing to start: {path} holds a secret and is readable by other users "
        f"(mode {mode:04o}); run: chmod {wanted} {path}"
    )


def check_secret_files(settings: AgentSettings, config: Path | None) -> None:
    """Raise SettingsError naming the first file that holds a secret and is not private."""
    token = settings.state_dir / TOKEN_FILE
    mode = _mode(token)
    if mode is not None and mode & 0o077:
        raise _refuse(token, mode, "600")
    candidates = []
    if settings.enroll_secret_file is not None:
        candidates.append(settings.enroll_secret_file)
    if config is not None and _holds_secret(config):
        candidates.append(config)
    for path in candidates:
        mode = _mode(path)
        if mode is not None and mode & 0o007:
            raise _refuse(path, mode, "640")


def _holds_secret(config: Path) -> bool:
    try:
        return "enroll_secret" in tomllib.loads(config.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False
