"""``fleetwatch bootstrap DIR``: what a new fleet needs before its first deploy.

Into a new directory (mode 0700), all at once or not at all:

    ca.crt          the fleet's certificate authority; agents trust it (fleetwatch_ca_cert)
    ca.key          its private key (0600): keep it offline once the collector's cert is made
    collector.crt   the collector's certificate, for the names and addresses given
    collector.key   its private key (0600)
    enroll-secret   the fleet-wide enrollment secret (0600)
    admin-token     the bootstrap admin API token (0600)

The example inventory (``inventory/group_data/``) reads these files from the directory named
by ``FLEETWATCH_BOOTSTRAP_DIR`` (``fleet-secrets/`` by default), so it deploys as written.
Keys are ECDSA P-256 (as small and fast as TLS keys get, and accepted by every TLS stack an
agent may use); certificates are made with the ``cryptography`` library, not by hand.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fleetwatch.collector.admin.cli import CliError
from fleetwatch.command_line import EXIT_USAGE

if TYPE_CHECKING:
    import argparse

    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

# cryptography is imported by the functions that use it, since every `fleetwatch`
# command builds this module's parser and should not pay for loading it.
CA_DAYS = 3650
CERT_DAYS = 825
# RFC 1123 labels; a leading "*." for a wildcard
_DNS_NAME = re.compile(
    r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$",
    re.IGNORECASE,
)
SECRET_FILES = ("ca.key", "collector.key", "enroll-secret", "admin-token")
PUBLIC_FILES = ("ca.crt", "collector.crt")


class BootstrapError(Exception):
    """What was asked cannot be made; the message says why, and nothing was written."""


@dataclass(frozen=True)
class Fleet:
    """What ``create_fleet`` made."""

    directory: Path
    names: tuple[str, ...]
    addresses: tuple[str, ...]
    not_after: dt.datetime


def _check_subject(
    names: list[str], addresses: list[str]
) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    if not names and not addresses:
        msg = "give the collector's names (--name) or addresses (--address), as agents reach it"
        raise BootstrapError(msg)
    for name in names:
        if len(name) > 253 or not _DNS_NAME.match(name):
            msg = f"--name {name!r} is not a DNS name (an address goes with --address)"
            raise BootstrapError(msg)
    parsed = []
    for address in addresses:
        try:
            parsed.append(ipaddress.ip_address(address))
        except ValueError as exc:
            msg = f"--address {address!r} is not an IP address (a name goes with --name)"
            raise BootstrapError(msg) from exc
    return parsed


def _key() -> EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificates(
    names: list[str],
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
    now: dt.datetime,
    cert_days: int,
) -> dict[str, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key, server_key = _key(), _key()
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleetwatch"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"fleetwatch fleet CA {now:%Y-%m-%d}"),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # clocks a little behind still agree
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        # path_length=0: it signs servers, never another CA
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt_names += [x509.IPAddress(a) for a in addresses]
    server = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else str(addresses[0]))]
            )
        )
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=cert_days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return {
        "ca.crt": ca.public_bytes(pem),
        "ca.key": _pem_key(ca_key),
        "collector.crt": server.public_bytes(pem),
        "collector.key": _pem_key(server_key),
    }


def _refuse_existing(directory: Path) -> None:
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        msg = f"{directory} exists and is not a directory; nothing was written"
        raise BootstrapError(msg)
    if directory.is_dir() and any(directory.iterdir()):
        found = ", ".join(sorted(p.name for p in directory.iterdir())[:6])
        msg = (
            f"{directory} is not empty ({found}); bootstrap never overwrites a fleet's keys "
            "and secrets: choose a new directory"
        )
        raise BootstrapError(msg)


def _write(path: Path, content: bytes, mode: int) -> None:
    # O_EXCL: never through a file or link that appeared meanwhile; the mode from the start
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(content)
    path.chmod(mode)  # whatever the umask took away from a public file


def create_fleet(
    directory: Path,
    names: list[str],
    addresses: list[str],
    *,
    cert_days: int = CERT_DAYS,
    now: dt.datetime | None = None,
) -> Fleet:
    """Make the fleet's CA, the collector's certificate and key, an enrollment secret and an
    admin token in ``directory`` (new, or empty), all at once: a failure leaves nothing."""
    parsed = _check_subject(names, addresses)
    if not 1 <= cert_days <= CA_DAYS:
        msg = f"--days must be between 1 and {CA_DAYS} (the CA's own lifetime)"
        raise BootstrapError(msg)
    directory = directory.absolute()
    _refuse_existing(directory)
    if not directory.parent.is_dir():
        msg = f"{directory.parent}: no such directory"
        raise BootstrapError(msg)
    now = now or dt.datetime.now(dt.UTC)
    contents = _certificates(names, parsed, now, cert_days)
    contents["enroll-secret"] = (secrets.token_urlsafe(32) + "\n").encode()
    contents["admin-token"] = (secrets.token_urlsafe(32) + "\n").encode()
    # made beside the target and renamed into place: complete or absent, never half-made
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        for name, content in contents.items():
            _write(staging / name, content, 0o600 if name in SECRET_FILES else 0o644)
        if directory.is_dir():
            directory.rmdir()  # empty, as checked: the rename takes its place
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    directory.chmod(0o700)
    return Fleet(
        directory=directory,
        names=tuple(names),
        addresses=tuple(str(a) for a in parsed),
        not_after=now + dt.timedelta(days=cert_days),
    )


def _next_steps(fleet: Fleet) -> str:
    subject = ", ".join([*fleet.names, *fleet.addresses])
    return (
        f"made in {fleet.directory} (mode 0700):\n"
        f"  ca.crt, ca.key              the fleet's CA (keep ca.key offline from now on)\n"
        f"  collector.crt, .key         the collector's certificate for {subject},\n"
        f"                              valid until {fleet.not_after:%Y-%m-%d}\n"
        f"  enroll-secret, admin-token  secrets (0600)\n"
        "next, with the example inventory (docs/deploy.md):\n"
        f"  export FLEETWATCH_BOOTSTRAP_DIR={fleet.directory}\n"
        "  pyinfra inventory/fleet.py deploy/recipes/install_collector.py "
        "--limit fleetwatch_collectors\n"
        "  pyinfra inventory/fleet.py deploy/recipes/install_agent.py"
    )


def cmd_bootstrap(args: argparse.Namespace) -> int:
    try:
        fleet = create_fleet(args.directory, args.names, args.addresses, cert_days=args.days)
    except BootstrapError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    print(_next_steps(fleet))
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "bootstrap",
        help="make a new fleet's CA, collector certificate, enrollment secret and admin token",
        description="Make what a new fleet needs into a new directory (0700; keys and "
        "secrets 0600). Nothing is ever overwritten.",
    )
    parser.add_argument("directory", type=Path, help="a new (or empty) directory")
    parser.add_argument(
        "--name",
        dest="names",
        action="append",
        default=[],
        metavar="DNS_NAME",
        help="a name agents reach the collector by (repeat for several)",
    )
    parser.add_argument(
        "--address",
        dest="addresses",
        action="append",
        default=[],
        metavar="IP",
        help="an address agents reach the collector at (repeat for several)",
    )
    parser.add_argument(
        "--days",
        type=int,
        default=CERT_DAYS,
        help=f"the collector certificate's lifetime (default {CERT_DAYS}; the CA's is {CA_DAYS})",
    )
    parser.set_defaults(func=cmd_bootstrap)
