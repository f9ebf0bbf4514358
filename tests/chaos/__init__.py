"""The chaos run: notifications triggered over HTTP while workers, Redis, PostgreSQL connections
and Novu fail on a schedule; afterwards nothing may be lost, sent twice or stuck."""
