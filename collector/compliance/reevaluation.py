"""What a host was evaluated against, so that a change evaluates again only the hosts it changes.

Every evaluation records on the host row (``baseline_digest``) a digest of what it read
beyond the host's own report: its resolved baseline, its unit and groups (`HostPolicy.
evaluation_digest`), and the generation of the vulnerability data. After a new policy or new
data, the hosts whose digest differs from the one they would be evaluated against now are
evaluated again, and no other: a policy that changes one group's baseline costs that group's
hosts, a policy file rewritten with a comment costs a read of two columns.

New vulnerability data changes the digest of every host (the data is one generation; which of
its packages changed is not recorded), so every host that reported is evaluated again then.
"""

from __future__ import annotations

import functools
import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fleetwatch.collector.compliance.policy import HostPolicy


def evaluated_against(policy: HostPolicy, generation: str) -> str:
    """The digest a host evaluated now under ``policy`` and the data ``generation`` records."""
    if not generation:
        return policy.evaluation_digest
    return _with_data(policy.evaluation_digest, generation)


@functools.lru_cache(maxsize=4096)
def _with_data(policy: str, generation: str) -> str:
    return hashlib.sha256(f"{policy}\n{generation}".encode()).hexdigest()
