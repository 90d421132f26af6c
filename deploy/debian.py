"""Debian packages of the agent and the collector, built from a source tree with dpkg-deb.

    python -m fleetwatch.deploy.debian [--out DIR] [--revision N] [agent] [collector]

(``scripts/build-deb`` runs this). A package holds a wheelhouse: fleetwatch and its
dependencies as wheels for every Python it supports (`fleetwatch.deploy.wheels` picks them),
because a virtualenv is tied to the Python that made it. Its ``postinst`` creates
``/opt/fleetwatch/NAME`` with the host's own ``python3`` from that wheelhouse, so one package
serves Debian 11 (Python 3.9) to 13 alike, without a package index. The maintainer scripts
create the system user, the state and log directories, a systemd unit and a sysvinit script
(`fleetwatch.deploy.initscript`), start the service, stop it before an upgrade or removal, and
on ``purge`` remove everything the package and its service created: virtualenv, settings,
secrets, state, logs, user and group. Settings in ``/etc`` are conffiles, kept on upgrade.

dpkg-deb is used directly rather than debhelper: the packages hold no compiled code of their
own and no Debian source package, and the maintainer scripts below are all there is to them.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from string import Template

from fleetwatch.deploy import wheels
from fleetwatch.deploy.deploys.service import logrotate_text, unit_text
from fleetwatch.deploy.initscript import InitScript

# The oldest C library the wheels must fit: Debian 11's glibc 2.31 (Ubuntu 20.04 has 2.31 too)
GLIBC_FLOOR = "2.31"
PREFIX = "/opt/fleetwatch"
MAINTAINER = "fleetwatch <fleetwatch@localhost>"

AGENT_CONFIG = """\
# fleetwatch agent settings (docs/agent.md: every setting, and its FLEETWATCH_* variable).
# Set collector_url and the enrollment secret, then start the agent:
#     systemctl restart fleetwatch-agent        (systemd)
#     /etc/init.d/fleetwatch-agent restart      (sysvinit)
# This file is the package's conffile: an upgrade keeps your changes.

# collector_url = "https://collector.example.org:8470"
# The enrollment secret in a file of its own, root:fleetwatch mode 0640:
# enroll_secret_file = "/etc/fleetwatch/enroll-secret"
# The CA that signed the collector's certificate, when it is not in the system's store:
# ca_bundle = "/etc/fleetwatch/collector-ca.pem"

state_dir = "/var/lib/fleetwatch-agent"
log_format = "json"
"""

COLLECTOR_CONFIG = """\
# fleetwatch collector settings (docs/collector.md), read by its service when it starts:
# restart it after a change. This file is the package's conffile: an upgrade keeps your changes.
FLEETWATCH_HOST=127.0.0.1
FLEETWATCH_PORT=8470
FLEETWATCH_DATA_DIR=/var/lib/fleetwatch
FLEETWATCH_LOG_FORMAT=json
# FLEETWATCH_DATABASE_URL=postgresql://fleetwatch@db.example.org/fleetwatch
# FLEETWATCH_POLICY=/etc/fleetwatch-collector/policy.toml
# Secrets in files of their own, root:fleetwatch-collector mode 0640:
# FLEETWATCH_ADMIN_TOKEN_FILE=/etc/fleetwatch-collector/admin-token
# FLEETWATCH_ENROLL_SECRET_FILE=/etc/fleetwatch-collector/enroll-secret
# FLEETWATCH_TLS_CERT=/etc/fleetwatch-collector/tls.crt
# FLEETWATCH_TLS_KEY=/etc/fleetwatch-collector/tls.key
"""


@dataclass(frozen=True)
class Package:
    """One binary package: what it installs, as whom it runs, what it keeps."""

    name: str  # also the service's name
    summary: str
    description: str
    extras: str
    pythons: tuple[str, ...]  # the wheelhouse's Python versions; the first is the oldest
    user: str
    config_dir: str
    config: str  # the settings file, a conffile
    config_text: str
    state_dir: str
    log_dir: str
    commands: tuple[str, ...]  # the virtualenv's programs linked into /usr/bin
    service: InitScript
    unit: str

    @property
    def venv(self) -> str:
        return f"{PREFIX}/{self.name.removeprefix('fleetwatch-')}"

    @property
    def wheelhouse(self) -> str:
        return f"/usr/share/{self.name}/wheelhouse"


def _agent() -> Package:
    venv = f"{PREFIX}/agent"
    config = "/etc/fleetwatch/agent.toml"
    command = [f"{venv}/bin/fleetwatch-agent", "--config", config, "run"]
    capabilities = ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"]  # as the pyinfra deploy
    return Package(
        name="fleetwatch-agent",
        summary="fleetwatch agent: reports this host's compliance facts",
        description=(
            "The fleetwatch agent reports this host's patch level, open ports and service\n"
            "health to a fleetwatch collector every few minutes."
        ),
        extras="",
        pythons=("3.9", "3.10", "3.11", "3.12", "3.13"),
        user="fleetwatch",
        config_dir="/etc/fleetwatch",
        config=config,
        config_text=AGENT_CONFIG,
        state_dir="/var/lib/fleetwatch-agent",
        log_dir="/var/log/fleetwatch-agent",
        commands=("fleetwatch-agent",),
        service=InitScript(
            service="fleetwatch-agent",
            description="fleetwatch agent",
            user="fleetwatch",
            command=command,
            supervisor=[f"{venv}/bin/python", "-m", "fleetwatch.supervise"],
            log="/var/log/fleetwatch-agent/agent.log",
            capabilities=capabilities,
            configured=f"grep -q '^[[:space:]]*collector_url[[:space:]]*=' {config}",
            unconfigured_message=f"set collector_url in {config}",
        ),
        unit=unit_text(
            description="fleetwatch agent: reports this host's compliance facts",
            user="fleetwatch",
            command=command,
            writable=["/var/lib/fleetwatch-agent"],
            capabilities=capabilities,
            nice=10,
        ),
    )


def _collector() -> Package:
    venv = f"{PREFIX}/collector"
    config = "/etc/fleetwatch-collector/collector.env"
    command = ["/bin/sh", "-c", f"set -a; . {config}; exec {venv}/bin/fleetwatch serve"]
    return Package(
        name="fleetwatch-collector",
        summary="fleetwatch collector: holds each host against its declared baseline",
        description=(
            "The fleetwatch collector takes the reports of fleetwatch agents, keeps them in\n"
            "SQLite or PostgreSQL and flags the hosts that fall short of their baseline."
        ),
        extras="collector",
        pythons=("3.11", "3.12", "3.13"),
        user="fleetwatch-collector",
        config_dir="/etc/fleetwatch-collector",
        config=config,
        config_text=COLLECTOR_CONFIG,
        state_dir="/var/lib/fleetwatch",
        log_dir="/var/log/fleetwatch-collector",
        commands=("fleetwatch",),
        service=InitScript(
            service="fleetwatch-collector",
            description="fleetwatch collector",
            user="fleetwatch-collector",
            command=command,
            supervisor=[f"{venv}/bin/python", "-m", "fleetwatch.supervise"],
            log="/var/log/fleetwatch-collector/collector.log",
            requires=f"{venv}/bin/fleetwatch",
        ),
        unit=unit_text(
            description="fleetwatch collector",
            user="fleetwatch-collector",
            command=command,
            writable=["/var/lib/fleetwatch"],
            capabilities=[],
            open_files=65536,
        ),
    )


PACKAGES = {"agent": _agent, "collector": _collector}

# Every script runs with `set -e`; $name and the like are filled in per package.
POSTINST = Template("""\
#!/bin/sh
set -e

if [ "$$1" = configure ]; then
    getent group $user >/dev/null || groupadd --system $user
    getent passwd $user >/dev/null || useradd --system --gid $user --no-create-home \\
        --home-dir $state_dir --shell /usr/sbin/nologin --comment "$name" $user
    install -d -o root -g $user -m 750 $config_dir
    chgrp $user $config && chmod 640 $config
    install -d -o $user -g $user -m 700 $state_dir
    install -d -o root -g $user -m 750 $log_dir

    # A virtualenv is tied to the Python that made it: make it with this host's python3
    # from the package's wheels, anew on every upgrade.
    rm -rf $venv
    mkdir -p $prefix
    python3 -m venv $venv
    $venv/bin/pip install --quiet --disable-pip-version-check --no-index \\
        --find-links $wheelhouse "$requirement"

    update-rc.d $name defaults >/dev/null
    if command -v deb-systemd-helper >/dev/null; then
        deb-systemd-helper unmask $name.service >/dev/null || true
        deb-systemd-helper enable $name.service >/dev/null || true
    fi
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
        if $configured; then
            deb-systemd-invoke restart $name.service
        fi
    else
        invoke-rc.d $name restart
    fi
fi
""")

PRERM = Template("""\
#!/bin/sh
set -e

# Stopped before an upgrade too: postinst replaces the virtualenv it runs from. Without
# systemd the package's own script stops it, not invoke-rc.d: where no init system runs
# (a container), invoke-rc.d refuses, and the service would go on running deleted code.
if [ -d /run/systemd/system ]; then
    deb-systemd-invoke stop $name.service >/dev/null || true
elif [ -x /etc/init.d/$name ]; then
    /etc/init.d/$name stop
fi
""")

POSTRM = Template("""\
#!/bin/sh
set -e

case "$$1" in
    remove)
        rm -rf $venv
        rmdir --ignore-fail-on-non-empty $prefix 2>/dev/null || true
        ;;
    purge)
        rm -rf $venv
        rmdir --ignore-fail-on-non-empty $prefix 2>/dev/null || true
        update-rc.d $name remove >/dev/null
        if command -v deb-systemd-helper >/dev/null; then
            deb-systemd-helper purge $name.service >/dev/null || true
            deb-systemd-helper unmask $name.service >/dev/null || true
        fi
        # settings, secrets and certificates put there by hand or by a deploy, state, logs
        rm -rf $config_dir $state_dir $log_dir /run/$name.pid
        if getent passwd $user >/dev/null; then userdel $user; fi
        if getent group $user >/dev/null; then groupdel $user; fi
        ;;
esac
""")


def _control(package: Package, version: str, architecture: str, size_kib: int) -> str:
    oldest = package.pythons[0]
    return (
        f"Package: {package.name}\n"
        f"Version: {version}\n"
        f"Architecture: {architecture}\n"
        f"Maintainer: {MAINTAINER}\n"
        f"Installed-Size: {size_kib}\n"
        # passwd: useradd; util-linux: setpriv; init-system-helpers: update-rc.d, invoke-rc.d
        f"Depends: python3 (>= {oldest}), python3-venv, passwd, util-linux, "
        "init-system-helpers\n"
        "Section: admin\n"
        "Priority: optional\n"
        "Homepage: https://github.com/fleetwatch/fleetwatch\n"
        f"Description: {package.summary}\n"
        + "".join(f" {line}\n" for line in package.description.splitlines())
    )


def _wheelhouse(package: Package, source: Path, into: Path) -> str:
    """Copy wheels for every Python of ``package`` into ``into``; the fleetwatch version."""
    into.mkdir(parents=True)
    version = ""
    for python in package.pythons:
        target = wheels.Target(python, platform.machine(), GLIBC_FLOOR)
        built = wheels.build(source, target, package.extras)
        version = built.version
        for wheel in built.directory.glob("*.whl"):
            if not (into / wheel.name).exists():
                shutil.copy2(wheel, into / wheel.name)
    return version


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def build(package: Package, source: Path, out: Path, revision: int = 1) -> Path:
    """Build ``package`` from the source tree ``source`` into ``out``; the .deb's path."""
    architecture = subprocess.run(
        ["dpkg", "--print-architecture"],  # noqa: S607  (Debian's dpkg, wherever PATH has it)
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / package.name
        fleetwatch_version = _wheelhouse(package, source, root / package.wheelhouse.lstrip("/"))
        version = f"{fleetwatch_version}-{revision}"
        requirement = f"fleetwatch[{package.extras}]" if package.extras else "fleetwatch"
        values = {
            "name": package.name,
            "user": package.user,
            "config_dir": package.config_dir,
            "config": package.config,
            "state_dir": package.state_dir,
            "log_dir": package.log_dir,
            "prefix": PREFIX,
            "venv": package.venv,
            "wheelhouse": package.wheelhouse,
            "requirement": f"{requirement}=={fleetwatch_version}",
            "configured": package.service.configured,
        }
        _write(root / package.config.lstrip("/"), package.config_text, 0o640)
        _write(root / package.service.path.lstrip("/"), package.service.text(), 0o755)
        _write(root / f"lib/systemd/system/{package.name}.service", package.unit)
        # the sysvinit service's log; logrotate reads it when installed, and skips it when not
        logrotate = f"/etc/logrotate.d/{package.name}"
        rotation = logrotate_text(package.service.log).replace("pyinfra deploy", "Debian package")
        _write(root / logrotate.lstrip("/"), rotation)
        for command in package.commands:
            link = root / "usr/bin" / command
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(f"{package.venv}/bin/{command}")
        size_kib = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) // 1024 + 1
        md5sums = "".join(
            f"{hashlib.md5(f.read_bytes()).hexdigest()}  {f.relative_to(root)}\n"  # noqa: S324  (dpkg's own format)
            for f in sorted(root.rglob("*"))
            if f.is_file() and not f.is_symlink()
        )
        debian = root / "DEBIAN"
        _write(debian / "control", _control(package, version, architecture, size_kib))
        conffiles = (package.config, package.service.path, logrotate)
        _write(debian / "conffiles", "".join(f"{path}\n" for path in conffiles))
        _write(debian / "md5sums", md5sums)
        _write(debian / "postinst", POSTINST.substitute(values), 0o755)
        _write(debian / "prerm", PRERM.substitute(values), 0o755)
        _write(debian / "postrm", POSTRM.substitute(values), 0o755)
        out.mkdir(parents=True, exist_ok=True)
        deb = out / f"{package.name}_{version}_{architecture}.deb"
        subprocess.run(  # noqa: S603  (dpkg-deb, on paths of ours)
            ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)],  # noqa: S607
            check=True,
            capture_output=True,
        )
    return deb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/build-deb", description="Build fleetwatch's Debian packages."
    )
    parser.add_argument(
        "packages", nargs="*", metavar="PACKAGE", help="agent, collector (default: both)"
    )
    parser.add_argument("--out", type=Path, default=Path("dist"), help="where (default: dist)")
    parser.add_argument(
        "--revision", type=int, default=1, help="the Debian revision, VERSION-N (default: 1)"
    )
    parser.add_argument(
        "--source", type=Path, default=wheels.default_source(), help="fleetwatch's source tree"
    )
    args = parser.parse_args(argv)
    if args.source is None:
        parser.error("--source: not running from a source tree; name one")
    unknown = sorted(set(args.packages) - set(PACKAGES))
    if unknown:
        parser.error(f"no package {', '.join(unknown)}: choose from {', '.join(PACKAGES)}")
    for name in args.packages or list(PACKAGES):
        try:
            deb = build(PACKAGES[name](), args.source, args.out, args.revision)
        except (wheels.WheelhouseError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            print(f"build-deb: {name}: {exc} {detail.decode(errors='replace')}", file=sys.stderr)
            return 1
        print(deb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
