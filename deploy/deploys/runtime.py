"""Getting a fleetwatch version into a virtualenv on a host: from an uploaded wheelhouse (the
default, hosts need no package index) or from a package index."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyinfra import host
from pyinfra.api import DeployError
from pyinfra.operations import pip, server

from fleetwatch import __version__
from fleetwatch.deploy import wheels
from fleetwatch.deploy.facts import Runtime
from fleetwatch.deploy.operations import python_package, upload_wheelhouse

if TYPE_CHECKING:
    from pyinfra.api.operation import OperationMeta


# The agent runs on Python 3.9 and newer (pyproject's requires-python); the collector on 3.11.
AGENT_PYTHON = (3, 9)
COLLECTOR_PYTHON = (3, 11)


def python_refusal(
    runtime: dict[str, Any], python: str, host_name: str, oldest: tuple[int, int] = AGENT_PYTHON
) -> str | None:
    """The one line that refuses a host whose Python is older than ``oldest``; else None."""
    major, _, minor = str(runtime["python"]).partition(".")
    if (int(major), int(minor)) >= oldest:
        return None
    return (
        f"{host_name}: {python} is Python {runtime['python']}; fleetwatch needs Python "
        f"{oldest[0]}.{oldest[1]} or newer there (set fleetwatch_python to another interpreter)"
    )


def host_runtime(python: str, oldest: tuple[int, int] = AGENT_PYTHON) -> dict[str, Any]:
    runtime = host.get_fact(Runtime, python=python)
    refusal = python_refusal(runtime, python, host.name, oldest)
    if refusal:
        raise DeployError(refusal)
    if not runtime.get("venv"):
        msg = f"{python} on {host.name} cannot create virtualenvs: install python3-venv"
        raise DeployError(msg)
    return runtime


def system_account(*, user: str, home: str, label: str) -> None:
    """A system group and user named ``user`` with no login shell; ``label`` names it in output."""
    server.group(name=f"Create {label} group", group=user, system=True)
    server.user(  # noqa: S604  (a login shell, not a shell command)
        name=f"Create {label} system user",
        user=user,
        group=user,
        system=True,
        home=home,
        shell="/usr/sbin/nologin",
        ensure_home=False,
    )


def install_fleetwatch(
    *, name: str, prefix: str, extras: str, python: str, runtime: dict[str, Any]
) -> list[OperationMeta]:
    """Install fleetwatch (with ``extras``) in ``{prefix}/{name}``; the operations that did it.

    Data: ``fleetwatch_index_url`` installs from that index instead of a wheelhouse, the
    version in ``fleetwatch_version`` (by default the version deploying it);
    ``fleetwatch_source`` names the wheel or source tree to deploy from a wheelhouse (by
    default the source tree this deploy comes from).
    """
    venv = f"{prefix}/{name}"
    index_url = host.data.get("fleetwatch_index_url")
    requirement = f"fleetwatch[{extras}]" if extras else "fleetwatch"
    created = pip.venv(name=f"Create the {name} virtualenv", path=venv, python=python)
    if index_url:
        version = host.data.get("fleetwatch_version") or __version__
        install = python_package(
            name=f"Install fleetwatch {version} from {index_url}",
            venv=venv,
            requirement=f"{requirement}=={version}",
            pip_args=f"--index-url {index_url}",
        )
        return [created, install]
    source = host.data.get("fleetwatch_source") or wheels.default_source()
    if source is None:
        msg = (
            "no fleetwatch to deploy: set fleetwatch_source to a wheel or source tree, or "
            "fleetwatch_index_url to install from an index"
        )
        raise DeployError(msg)
    target = wheels.Target(runtime["python"], runtime["machine"], runtime["libc"] or "2.17")
    try:
        built = wheels.build(Path(source), target, extras)
    except wheels.WheelhouseError as exc:
        raise DeployError(str(exc)) from exc
    remote = f"{prefix}/wheelhouse/{name}"
    upload = upload_wheelhouse(
        name=f"Upload the {name} wheelhouse (fleetwatch {built.version})",
        src=str(built.directory),
        dest=remote,
        digest=built.digest,
    )
    install = python_package(
        name=f"Install fleetwatch {built.version} from the wheelhouse",
        venv=venv,
        requirement=f"{requirement}=={built.version}",
        pip_args=f"--no-index --find-links {remote}",
    )
    return [created, upload, install]
