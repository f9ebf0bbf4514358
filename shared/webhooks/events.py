"""The event types an endpoint may subscribe to, and the timeline kinds they come from.

The outbox is filled by a trigger on the timeline (migration 0009), which reads the same
mapping: keep the two in step (tests/shared/test_webhook_events.py compares them).
"""

from __future__ import annotations

NOTIFICATION_EVENTS = ("notification.sent", "notification.failed", "notification.retracted")
# Novu's per-channel delivery events, as its webhooks name them (recorded by
# shared/notifications's Novu webhook receiver as timeline kinds `delivery.message.*`).
MESSAGE_EVENTS = (
    "message.sent",
    "message.delivered",
    "message.failed",
    "message.seen",
    "message.read",
)
# Events about a scheduled rule rather than a notification: written by the rules tick
# (shared/rules/scheduler.py), not by the timeline's trigger.
RULE_FAILED = "rule.failed"
RULE_EVENTS = (RULE_FAILED,)
EVENT_TYPES = NOTIFICATION_EVENTS + MESSAGE_EVENTS + RULE_EVENTS

# Timeline kind -> webhook event type.
TIMELINE_KINDS: dict[str, str] = {
    "sent": "notification.sent",
    "failed": "notification.failed",
    "retracted": "notification.retracted",
    **{f"delivery.{event}": event for event in MESSAGE_EVENTS},
}

# Timeline kinds this part appends for each attempt (never fanned out again).
DELIVERED_KIND = "webhook.delivered"
FAILED_KIND = "webhook.failed"
