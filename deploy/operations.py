"""Operations pyinfra lacks for fleetwatch: ``secret_file`` (a file holding a secret, never
shown in the output), ``daemon`` (a supervised process on hosts without systemd),
``python_package`` (a requirement with extras in a virtualenv) and ``upload_wheelhouse`` (the upload
of a wheelhouse that `fleetwatch.deploy.wheels` built)."""

from __future__ import annotations

import hashlib
import shlex
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING

from pyinfra import host
from pyinfra.api import FileUploadCommand, operation
from pyinfra.facts.files import File, FileContents, Sha256File

from fleetwatch.deploy.facts import DaemonStatus
from fleetwatch.deploy.initscript import start_command, stop_command

if TYPE_CHECKING:
    from collections.abc import Generator


@operation()
def secret_file(
    path: str, content: str, user: str = "root", group: str = "root", mode: str = "640"
) -> Generator[str | FileUploadCommand, None, None]:
    """
    Put a file that holds a secret, without its content ever appearing in pyinfra's output
    (``files.put`` shows a diff with ``--diff``; this never does).

    + path: where the file goes; its directory must exist and should not be world-readable,
      since the upload passes through a temporary file next to it
    + content: the file's text
    + user, group, mode: its owner and permissions

    **Example:**

    .. code:: python

        secret_file(
            name="Put the enrollment secret",
            path="/etc/fleetwatch/enroll-secret",
            content=host.data.fleetwatch_enroll_secret,
            group="fleetwatch",
        )
    """
    data = content.encode()
    wanted = hashlib.sha256(data).hexdigest()
    if host.get_fact(Sha256File, path=path) != wanted:
        directory = path.rsplit("/", 1)[0] or "/"
        yield FileUploadCommand(
            BytesIO(data),
            path,
            remote_temp_filename=host.get_temp_filename(path, temp_directory=directory),
        )
        yield f"chown {shlex.quote(user)}:{shlex.quote(group)} {shlex.quote(path)}"
        yield f"chmod {mode} {shlex.quote(path)}"
        return
    current = host.get_fact(File, path=path)  # a FileDict; the hash above says it exists
    if not current or (current["user"], current["group"]) != (user, group):
        yield f"chown {shlex.quote(user)}:{shlex.quote(group)} {shlex.quote(path)}"
    if not current or str(current["mode"]) != mode.lstrip("0"):
        yield f"chmod {mode} {shlex.quote(path)}"


@operation()
def daemon(
    pidfile: str,
    argv: list[str],
    user: str,
    log: str,
    capabilities: list[str] | None = None,
    running: bool = True,
    restarted: bool = False,
) -> Generator[str, None, None]:
    """
    Keep a process running on a host without systemd, with ``start-stop-daemon``.

    The process runs as ``user`` with no new privileges and only ``capabilities`` (dropped
    to with ``setpriv``); its output is appended to ``log``.

    + pidfile: the process's pidfile, how it is found again
    + argv: the command (a supervisor that restarts what it runs, for a supervised service)
    + user: who it runs as
    + log: where its output goes
    + capabilities: Linux capabilities it keeps, such as ``["CAP_SYS_PTRACE"]``
    + running: whether it should run
    + restarted: stop and start it (if it runs)

    **Example:**

    .. code:: python

        daemon(
            name="Run the agent",
            pidfile="/run/fleetwatch-agent.pid",
            argv=["/opt/fleetwatch/agent/bin/fleetwatch-agent", "run"],
            user="fleetwatch",
            log="/var/log/fleetwatch/agent.log",
        )
    """
    is_running = host.get_fact(DaemonStatus, pidfile=pidfile) == 0
    start = start_command(pidfile, log, user, capabilities or [], argv)
    if not running:
        if is_running:
            yield stop_command(pidfile)
        return
    if restarted and is_running:
        yield stop_command(pidfile)
        yield start
    elif not is_running:
        yield start


@operation()
def python_package(venv: str, requirement: str, pip_args: str = "") -> Generator[str, None, None]:
    """
    Install a requirement, extras and all, into a virtualenv; again only when the requirement
    or the pip arguments changed (``pip.packages`` drops extras when it compares versions).

    + venv: the virtualenv, which must exist
    + requirement: such as ``fleetwatch[collector]==0.1.0``
    + pip_args: such as ``--no-index --find-links /opt/fleetwatch/wheelhouse/collector``

    **Example:**

    .. code:: python

        python_package(
            name="Install fleetwatch",
            venv="/opt/fleetwatch/collector",
            requirement="fleetwatch[collector]==0.1.0",
        )
    """
    marker = f"{venv}/.fleetwatch-requirement"
    wanted = f"{requirement} {pip_args}".strip()
    current = host.get_fact(FileContents, path=marker)
    if current and current[0].strip() == wanted:
        return
    yield (
        f"{shlex.quote(venv)}/bin/pip install --quiet --disable-pip-version-check "
        f"{pip_args} {shlex.quote(requirement)}"
    )
    yield f"echo {shlex.quote(wanted)} > {shlex.quote(marker)}"


@operation()
def upload_wheelhouse(
    src: str, dest: str, digest: str
) -> Generator[str | FileUploadCommand, None, None]:
    """
    Put a directory of wheels on the host, unless the one there has the same digest.

    One fact tells whether anything changed, where ``files.sync`` checks every file.

    + src: the local wheelhouse directory
    + dest: where it goes on the host (replaced whole when it differs)
    + digest: a digest of the wheelhouse's contents

    **Example:**

    .. code:: python

        wheelhouse(
            name="Upload the agent's wheelhouse",
            src="/home/ops/.cache/fleetwatch/wheelhouses/3fa4...",
            dest="/opt/fleetwatch/wheelhouse/agent",
            digest="3fa4...",
        )
    """
    marker = f"{dest}/.digest"
    current = host.get_fact(FileContents, path=marker)
    if current and current[0].strip() == digest:
        return
    yield f"rm -rf {shlex.quote(dest)} && mkdir -p {shlex.quote(dest)}"
    for wheel in sorted(Path(src).glob("*.whl")):
        remote = f"{dest}/{wheel.name}"
        yield FileUploadCommand(
            str(wheel), remote, remote_temp_filename=host.get_temp_filename(remote)
        )
    yield f"chmod 644 {shlex.quote(dest)}/*.whl"
    yield f"echo {shlex.quote(digest)} > {shlex.quote(marker)}"
