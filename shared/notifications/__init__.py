"""A notification's whole life: intake → record → publish → deliver → outcome.

See docs/architecture.md for how the modules fit together: `intake` checks and accepts
triggers, `recorder` commits them in groups, `publisher` publishes their deliveries after the
commit, `delivery` hands them to Novu, `repository` and `transitions` hold the SQL of every
state change, and `service` answers reads, cancels and retries.
"""
