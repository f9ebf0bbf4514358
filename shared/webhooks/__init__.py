"""Status webhooks to enterprises: endpoints, the outbox, signing and delivery
(docs/architecture.md, "Status webhooks")."""
