"""Scheduled (CRON) rules: their schedule, their payload, and the beat-driven scheduler."""
