"""A policy change that opens 2,000 findings: the real collector service evaluates every host
again, and the sender tells each unit once, in a summary, not 2,000 times."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fleetwatch.collector.service import CollectorService
from fleetwatch.collector.settings import CollectorSettings
from fleetwatch.schema import Report
from tests.collector.notifications.conftest import hook_table
from tests.collector.notifications.receivers import WebhookReceiver
from tests.helpers import make_report, ports_section

PORTS = range(8000, 8040)  # 40 listeners on each of 50 hosts: 2,000 findings
HOSTS = {f"web-{n:02d}.parks": "parks" for n in range(40)} | {
    f"web-{n:02d}.schools": "schools" for n in range(10)
}


def policy_text(allowed: str) -> str:
    units = "".join(
        f'[units.{u}]\ntitle = "{u}"\ntargets = ["hook"]\n\n' for u in ("parks", "schools")
    )
    hosts = "".join(f'[hosts."{h}"]\nunit = "{u}"\n\n' for h, u in HOSTS.items())
    return f"[defaults]\nallowed_ports = [{allowed}]\n\n{units}{hosts}"


@pytest.fixture
def service(
    database_url: str, tmp_path: Path, webhook: WebhookReceiver
) -> Iterator[CollectorService]:
    policy = tmp_path / "policy.toml"
    policy.write_text(policy_text('"tcp/1-65535"'))
    notifications = tmp_path / "notifications.toml"
    notifications.write_text(hook_table(tmp_path, "hook", webhook.url))
    svc = CollectorService(
        CollectorSettings(
            database_url=database_url,
            policy=policy,
            notifications=notifications,
            enroll_secret="s3cret",
            data_dir=tmp_path,
            policy_check_interval=3600,  # the test runs the rounds and passes itself
            notify_interval=3600,
        )
    )
    svc.start()
    yield svc
    svc.stop()


@pytest.mark.slow
def test_a_policy_change_opening_2000_findings_is_one_summary_per_unit(
    service: CollectorService, webhook: WebhookReceiver, tmp_path: Path
) -> None:
    """Tightening allowed_ports opens 40 findings on each of 50 hosts; parks and schools each
    get one summary on their target, counting all of theirs."""
    sections = {"ports": ports_section(*(("tcp", "0.0.0.0", p) for p in PORTS))}
    for host in HOSTS:
        service.identity.enroll(host, "s3cret")
        body = make_report(host, 1, sections)
        service.ingestor.ingest(Report.model_validate(body), host)
    before = service.sender.one_pass(datetime.now(UTC))  # whatever enrolling announced
    assert before.failed == 0
    webhook.received.clear()
    (tmp_path / "policy.toml").write_text(policy_text('"tcp/22"'))
    changed, hosts = service.reload_policy()
    assert (changed, hosts) == (True, 50)
    result = service.sender.one_pass(datetime.now(UTC))
    assert result.events >= 2000
    summaries = {b["unit"]: b for b in webhook.bodies()}
    assert sorted(summaries) == ["parks", "schools"]
    assert len(webhook.received) == 2
    assert {u: (b["type"], b["by_kind"]["opened"]) for u, b in summaries.items()} == {
        "parks": ("summary", 1600),
        "schools": ("summary", 400),
    }
    assert all(r.signed for r in webhook.received)
