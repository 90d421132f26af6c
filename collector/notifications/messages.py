"""What a message says: one event, a storm's summary, a unit's digest, a test; and how each
target's format puts it (signed JSON, Alertmanager's webhook format, Slack's, e-mail).

A message's content is planned once, when its delivery is recorded, and stored with it: a
resend says exactly what the first attempt said. Subjects, hosts and details come from agent
reports, so every line of text made from them is cleaned (control characters out, length
bounded), Slack's markup is escaped, and JSON carries them as strings.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING, Any

from fleetwatch import __version__

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from fleetwatch.collector.storage.events import EventRow

# how many events a summary or a digest lists one by one; the rest are counted
LISTED = 20
DIGEST_LISTED = 200
# events that tell of something put right: "resolved" in Alertmanager's terms
RESOLVING = frozenset({"resolved", "verified", "host_back", "waived"})


def clean_line(text: object, limit: int = 300) -> str:
    """One line of text from something an agent may have sent: control characters become
    spaces, and it is cut at ``limit`` characters."""
    line = re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+", " ", str(text)).strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"


# -- content ----------------------------------------------------------------------------


def item_of(event: EventRow) -> dict[str, Any]:
    """An event as messages tell it."""
    return {
        "event_id": event.id,
        "kind": event.kind,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "unit": event.unit,
        "host_id": event.host_id,
        "finding_id": event.finding_id,
        "rule": event.rule,
        "severity": event.severity,
        "subject": event.subject,
        "detail": event.detail,
    }


def event_content(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "event", "unit": item["unit"], "event": item}


def _counted(items: Sequence[dict[str, Any]], listed: int) -> dict[str, Any]:
    return {
        "count": len(items),
        "by_kind": dict(Counter(i["kind"] for i in items).most_common()),
        "by_severity": dict(Counter(i["severity"] or "none" for i in items).most_common()),
        "first_at": items[0]["at"] if items else None,
        "last_at": items[-1]["at"] if items else None,
        "events": list(items[:listed]),
        "omitted": max(0, len(items) - listed),
    }


def summary_content(unit: str | None, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Many events of one pass for one unit and target, in one message."""
    return {"type": "summary", "unit": unit, **_counted(items, LISTED)}


def digest_content(
    unit: str | None, items: Sequence[dict[str, Any]], until: datetime
) -> dict[str, Any]:
    """A unit's events waiting for its daily digest, in one message."""
    return {
        "type": "digest",
        "unit": unit,
        "until": until.isoformat(),
        **_counted(items, DIGEST_LISTED),
    }


def test_content(target: str, at: datetime) -> dict[str, Any]:
    return {"type": "test", "unit": None, "target": target, "at": at.isoformat()}


# -- text -------------------------------------------------------------------------------


def item_line(item: dict[str, Any]) -> str:
    """One line for one event: ``[high] opened: allowed_ports tcp/8081 on web-01 (parks)``."""
    what = " ".join(clean_line(item[k], 120) for k in ("rule", "subject") if item.get(k))
    where = f" on {clean_line(item['host_id'], 253)}" if item.get("host_id") else ""
    unit = f" ({clean_line(item['unit'], 80)})" if item.get("unit") else ""
    severity = f"[{clean_line(item['severity'], 16)}] " if item.get("severity") else ""
    kind = clean_line(item["kind"], 32).replace("_", " ")
    return f"{severity}{kind}: {what or '-'}{where}{unit}"


def _unit_words(content: dict[str, Any]) -> str:
    return f"unit {clean_line(content['unit'], 80)}" if content.get("unit") else "the fleet"


def title(content: dict[str, Any]) -> str:
    """A message's one-line title (an e-mail's subject)."""
    kind = content["type"]
    if kind == "event":
        return item_line(content["event"])
    if kind == "summary":
        return f"{content['count']} events for {_unit_words(content)} (summary)"
    if kind == "digest":
        return f"daily digest for {_unit_words(content)}: {content['count']} events"
    return f"test message to target {clean_line(content['target'], 64)}"


def text_lines(content: dict[str, Any]) -> list[str]:
    """A message's body as lines of plain text."""
    kind = content["type"]
    if kind == "test":
        target = clean_line(content["target"], 64)
        return [
            f"This is a test message from fleetwatch {__version__} to target {target}.",
            f"Sent at {content['at']}. Nothing needs doing.",
        ]
    if kind == "event":
        item = content["event"]
        lines = [item_line(item), "", f"at: {item['at']}", f"by: {clean_line(item['actor'], 255)}"]
        lines += [
            f"{clean_line(k, 40)}: {clean_line(v)}"
            for k, v in sorted(item["detail"].items())
            if v is not None
        ]
        return lines
    lines = [title(content), ""]
    lines += [f"{n} {k.replace('_', ' ')}" for k, n in content["by_kind"].items()]
    severities = ", ".join(f"{n} {s}" for s, n in content["by_severity"].items())
    lines += [f"by severity: {severities}", f"from {content['first_at']} to {content['last_at']}"]
    lines += ["", *(f"- {item_line(i)}" for i in content["events"])]
    if content["omitted"]:
        lines.append(f"- and {content['omitted']} more")
    return lines


# -- formats ----------------------------------------------------------------------------


def webhook_body(delivery: int, content: dict[str, Any]) -> bytes:
    """The generic webhook's JSON: the content, with the delivery id and a title."""
    body = {"fleetwatch": __version__, "delivery": delivery, "title": title(content), **content}
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def _alert(item: dict[str, Any], external_url: str) -> dict[str, Any]:
    labels = {
        "alertname": f"fleetwatch_{item['rule'] or item['kind']}",
        "kind": item["kind"],
        "unit": item["unit"],
        "host": item["host_id"],
        "rule": item["rule"],
        "severity": item["severity"],
        "subject": item["subject"],
    }
    return {
        "status": "resolved" if item["kind"] in RESOLVING else "firing",
        "labels": {k: clean_line(v, 253) for k, v in labels.items() if v is not None},
        "annotations": {
            "summary": item_line(item),
            "description": clean_line(json.dumps(item["detail"], sort_keys=True), 2000),
        },
        "startsAt": item["at"],
        "endsAt": item["at"] if item["kind"] in RESOLVING else "0001-01-01T00:00:00Z",
        "generatorURL": external_url,
        "fingerprint": f"{item['event_id']:016x}",
    }


def alertmanager_body(
    delivery: int, content: dict[str, Any], receiver: str, external_url: str
) -> bytes:
    """Alertmanager's webhook receiver format (version 4): one alert per event listed."""
    if content["type"] == "event":
        items, omitted = [content["event"]], 0
    elif content["type"] == "test":
        items = [
            {
                "event_id": 0,
                "kind": "test",
                "at": content["at"],
                "actor": "fleetwatch",
                "unit": None,
                "host_id": None,
                "finding_id": None,
                "rule": None,
                "severity": None,
                "subject": None,
                "detail": {},
            }
        ]
        omitted = 0
    else:
        items, omitted = content["events"], content["omitted"]
    alerts = [_alert(i, external_url) for i in items]
    firing = any(a["status"] == "firing" for a in alerts)
    group = {"unit": clean_line(content["unit"], 253)} if content.get("unit") else {}
    body = {
        "version": "4",
        "groupKey": f"fleetwatch:{content['type']}:{delivery}",
        "truncatedAlerts": omitted,
        "status": "firing" if firing else "resolved",
        "receiver": receiver,
        "groupLabels": group,
        "commonLabels": group,
        "commonAnnotations": {"summary": title(content)},
        "externalURL": external_url,
        "alerts": alerts,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def slack_escape(text: str) -> str:
    """Text Slack shows as written: its three control characters escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(content: dict[str, Any]) -> bytes:
    """A Slack-compatible incoming-webhook payload (also taken by Mattermost, Rocket.Chat)."""
    lines = text_lines(content)
    head = slack_escape(title(content))
    rest = "\n".join(slack_escape(line) for line in lines[1:]).strip()
    text = f"*fleetwatch: {head}*" + (f"\n{rest}" if rest else "")
    return json.dumps({"text": text[:39000]}, separators=(",", ":")).encode()


def email_message(
    delivery: int,
    content: dict[str, Any],
    sender: str,
    to: Sequence[str],
    at: datetime,
) -> EmailMessage:
    """A plain-text e-mail; its Message-ID is the delivery's, the same for every attempt."""
    # headers are not folded below SMTP's own line limit: a folded Subject comes out of
    # Python's parser (and some mail readers) with a leading space
    message = EmailMessage(policy=policy.SMTP.clone(max_line_length=998))
    message["Subject"] = f"fleetwatch: {title(content)}"
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Date"] = format_datetime(at)
    domain = sender.rpartition("@")[2]
    message["Message-ID"] = (
        f"<fleetwatch-delivery-{delivery}@{domain}>" if delivery else make_msgid(domain=domain)
    )
    message["X-Fleetwatch-Delivery"] = str(delivery)
    message["X-Fleetwatch-Type"] = content["type"]
    message.set_content("\n".join(text_lines(content)) + "\n")
    return message
