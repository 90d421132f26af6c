"""What apt prints: the upgrades ``apt-get -s dist-upgrade`` would install.

``apt-get -s dist-upgrade`` needs no root and changes nothing; it prints one ``Inst`` line per
package it would install, naming the origins of the candidate version::

    Inst libgcrypt20 [1.10.1-3] (1.10.1-3+deb12u1 Debian:12.15/oldstable, \
Debian-Security:12/oldstable-security [amd64])

An update is a security update when one of its candidate's origins is a ``-security`` suite.
"""

from __future__ import annotations

import re

from fleetwatch.schema import PendingUpdate

_INST = re.compile(
    r"^Inst (?P<name>\S+)"
    r"(?: \[(?P<installed>[^\]]+)\])?"
    r" \((?P<candidate>\S+) (?P<origins>.*) \[(?P<arch>[^\]]+)\]\)"
)


def parse_simulation(text: str) -> list[PendingUpdate]:
    """The upgrades in ``apt-get -s dist-upgrade`` output, sorted by name and architecture."""
    updates = []
    for line in text.splitlines():
        match = _INST.match(line)
        if match is None:
            continue
        origins = [o.strip() for o in match["origins"].split(",") if o.strip()]
        updates.append(
            PendingUpdate(
                name=match["name"],
                architecture=match["arch"],
                installed_version=match["installed"],
                candidate_version=match["candidate"],
                security=any(_is_security_origin(o) for o in origins),
                origins=origins[:32],
            )
        )
    updates.sort(key=lambda u: (u.name, u.architecture))
    return updates


def _is_security_origin(origin: str) -> bool:
    # Debian's origins read Debian-Security:12/oldstable-security, Ubuntu's
    # Ubuntu:22.04/jammy-security: the suite after the slash is what counts.
    suite = origin.rsplit("/", 1)[-1]
    return suite.endswith("-security")
