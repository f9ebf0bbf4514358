"""`python -m novu_emulator [--host H] [--port P] [--bridge-url URL]`: the emulator
without the CLI."""

from __future__ import annotations

import argparse
import logging

from novu_emulator.server import serve
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
    args = parser.parse_args()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s %(message)s"
    )
    serve(args.host, args.port, settings.effective_novu_secret_key, bridge_url=args.bridge_url)


if __name__ == "__main__":
    main()
