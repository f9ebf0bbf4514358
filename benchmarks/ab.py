"""A/B of POST /api/trigger: this checkout against another, on one stack, rounds alternating.

    python -m benchmarks.ab OTHER_CHECKOUT [--rounds 6] [--seconds 8]

Both checkouts serve the API from their own venv (`<checkout>/.venv`, as `make install` makes
it; a symlink to this one's will do) against the same PostgreSQL and Redis, the order swapped
every round, so that a slow spell of a shared machine hits both alike. Each turn is (a)'s load
(32 connections); it prints the throughput and the CPU the API processes spent per trigger,
then the medians. The comparison itself is benchmarks/variants.py's, whose variants differ by
environment instead of by checkout. Used to compare a change with its parent
(docs/performance.md, "Before and after the restructuring").
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.variants import Variant, compare


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other checkout (with its own .venv)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    variants = [Variant("this", {}), Variant("other", {}, tree=args.other.resolve())]
    compare(variants, rounds=args.rounds, seconds=args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
