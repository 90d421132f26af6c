"""Notifications: telling units and the office what happened, from the event log.

`config` (the collector-side file of targets, mail server and routes), `units` (the one
place that reads a unit's contacts from the policy), `routing` (which targets an event goes
to), `messages` (what a message says, in each target's format), `targets` (sending one
message), `sender` (the one sender of the fleet: cursor, deliveries, storms, digests,
retries, status). docs/notifications.md tells the story.
"""
