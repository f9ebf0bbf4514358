"""Enumerations stored in the `notify` schema, spelled as the original XNovu SQL spells them."""

from __future__ import annotations

import enum


class PublishStatus(enum.StrEnum):
    NONE = "NONE"
    DRAFT = "DRAFT"
    DISCARD = "DISCARD"
    PUBLISH = "PUBLISH"
    DELETED = "DELETED"
    REVIEW = "REVIEW"


class ChannelType(enum.StrEnum):
    EMAIL = "EMAIL"
    IN_APP = "IN_APP"
    SMS = "SMS"
    PUSH = "PUSH"
    CHAT = "CHAT"


class WorkflowType(enum.StrEnum):
    STATIC = "STATIC"
    DYNAMIC = "DYNAMIC"


class TriggerType(enum.StrEnum):
    CRON = "CRON"


class NotificationStatus(enum.StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    SENT = "SENT"
    FAILED = "FAILED"
    RETRACTED = "RETRACTED"


class ApiKeyScope(enum.StrEnum):
    ENTERPRISE = "enterprise"
    SERVICE = "service"
