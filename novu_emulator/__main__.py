"""`python -m novu_emulator [--host H] [--port P] [--bridge-url URL] [--events-rps N]
[--dedupe-race-window-ms MS]`: the emulator without the CLI."""

from __future__ import annotations

import argparse
import logging
import os

from novu_emulator.ratelimit import DEFAULT_EVENTS_RPS
from novu_emulator.server import serve
from novu_emulator.state import DEFAULT_DEDUPE_RACE_WINDOW_MS
from shared.settings import get_settings


def main() -> None:
    """Serve on the configured port with the configured (or the development) secret key."""
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m novu_emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=settings.novu_emulator_port)
    parser.add_argument(
        "--bridge-url",
        default=settings.novu_bridge_url,
        help="Framework bridge to execute triggers on (default: NOVU_BRIDGE_URL; none)",
    )
    parser.add_argument(
        "--events-rps",
        type=int,
        default=int(os.environ.get("NOVU_EMULATOR_EVENTS_RPS") or DEFAULT_EVENTS_RPS),
        help="the Novu tier's Events rate limit, tokens/s (default: NOVU_EMULATOR_EVENTS_RPS; "
        "60, Novu's Free tier)",
    )
    parser.add_argument(
        "--dedupe-race-window-ms",
        type=int,
        default=int(
            os.environ.get("NOVU_EMULATOR_DEDUPE_RACE_WINDOW_MS") or DEFAULT_DEDUPE_RACE_WINDOW_MS
        ),
        help="a second trigger of a transactionId this soon after the first runs too "
        "(default: NOVU_EMULATOR_DEDUPE_RACE_WINDOW_MS; 100)",
    )
    args = parser.parse_args()
    if args.events_rps < 1:
        parser.error("--events-rps must be at least 1")
    if args.dedupe_race_window_ms < 0:
        parser.error("--dedupe-race-window-ms must not be negative")
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s %(message)s"
    )
    serve(
        args.host,
        args.port,
        settings.effective_novu_secret_key,
        bridge_url=args.bridge_url,
        events_rps=args.events_rps,
        dedupe_race_window_ms=args.dedupe_race_window_ms,
        webhook_url=settings.novu_emulator_webhook_url,
        webhook_secret=(
            secret.get_secret_value()
            if (secret := settings.novu_emulator_webhook_secret) is not None
            else None
        ),
    )


if __name__ == "__main__":
    main()
