"""The benchmark's table: every figure, its baseline, and the issue's target for it."""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """Prints what finished and when, to stderr, as the run goes."""

    def __init__(self, began: float) -> None:
        self.began = began

    def __call__(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.began:6.1f}s] {message}", file=sys.stderr, flush=True)


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(measure, value, baseline or detail, target and verdict) for every figure measured."""
    out: list[tuple[str, str, str, str]] = []
    if "generator_ceiling" in results:
        out.append(
            (
                "load generator ceiling (canned server)",
                f"{results['generator_ceiling']['rate']:,.0f} req/s",
                "32 connections",
                "",
            )
        )
    if "a" in results:
        out += _rows_a(results["a"])
    if "b" in results:
        out += _rows_b(results["b_noop"], results["b"])
    if "c" in results:
        out += _rows_c(results["c"])
    if "d" in results:
        out += _rows_d(results["d"])
    if "e" in results:
        out += _rows_e(results["e"])
    if results.get("f"):
        out += _rows_f(results["f"])
    if "g" in results:
        out += _rows_g(results["g"])
    if "h" in results:
        out += _rows_h(results["h"])
    if "i" in results:
        out += _rows_i(results["i"])
    out += _rows_tokens(results)
    return out


def _rows_i(i: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The rules scheduler's tick: idle and with many due, at 10,000 rules against 100."""
    small, large = i["small"], i["large"]
    flat = i["idle_ratio"] <= 2 and i["per_fired_rule_ratio"] <= 2
    return [
        (
            f"(i) rules tick, {large['due']:,} due of {large['rules']:,}",
            f"{large['due_tick_ms']:,.0f} ms",
            f"{large['notifications_per_second']:,.0f} notif/s created;"
            f" {small['due']} due of {small['rules']}: {small['due_tick_ms']:,.0f} ms",
            f"per fired rule {i['per_fired_rule_ratio']:.2f}x (flat <= 2x) {_met(flat)}",
        ),
        (
            "(i) rules tick, nothing due",
            f"{large['idle_tick_ms']:.1f} ms",
            f"{small['rules']} rules: {small['idle_tick_ms']:.1f} ms",
            f"{i['idle_ratio']:.2f}x",
        ),
    ]


def _rows_g(g: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The bridge's execute against the reference bridge, medians of alternating rounds."""
    ours, reference = g["median"]["xnovu"], g["median"]["reference"]
    p99 = ours["at_1000"]["p99_ms"]
    return [
        (
            f"(g) bridge execute {g['workflow']}/{g['step']}, {g['connections']} connections",
            f"{ours['rate']:,.0f} req/s",
            f"{g['reference']}: {reference['rate']:,.0f} req/s, ratio {g['ratio_rate']:.2f}",
            f">= 1.0: {_met(g['ratio_rate'] >= 1.0)}",
        ),
        (
            "(g) bridge execute p99 at 1,000 req/s, one process",
            f"{p99:.1f} ms",
            f"{g['reference']}: {reference['at_1000']['p99_ms']:.1f} ms",
            f"<= 25 ms: {_met(p99 <= 25)}",
        ),
    ]


def _rows_h(h: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """End to end with every step executed on the bridge, against the no-op drain rate."""
    return [
        (
            f"(h) {h['notifications']:,} bulk-triggered, accepted by Novu",
            f"{h['accepted_rate']:,.0f} /s",
            f"{h['accepted_ratio']:.2f}x the no-op drain ({h['noop_rate']:,.0f} tasks/s)",
            "",
        ),
        (
            f"(h) all {h['steps_per_notification']} steps executed on the bridge",
            f"{h['executed_rate']:,.0f} /s",
            f"{h['executed_ratio']:.2f}x the no-op drain; failed steps "
            f"{h['bridge']['failedSteps']}",
            f">= 5x: {_met(h['executed_ratio'] >= 5)}",
        ),
    ]


def _rows_tokens(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Novu Events tokens per notification at every load measured."""
    return [
        (
            f"({stage}) Novu tokens per notification",
            f"{results[stage]['novu_tokens_per_notification']:.3f}",
            "1 a single trigger, 100 a bulk call of 100",
            f"<= 1.0: {_met(results[stage]['novu_tokens_per_notification'] <= 1.0)}",
        )
        for stage in ("b", "c", "d")
        if "novu_tokens_per_notification" in results.get(stage, {})
    ]


def _rows_a(a: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    trig, bare = a["trigger"], a["bare"]
    rounds = a.get("rounds", [])
    worst_p99 = max([trig["p99_ms"], *(r["trigger_p99_ms"] for r in rounds)])
    return [
        (
            "(a) bare FastAPI JSON POST (median round)",
            f"{bare['rate']:,.0f} req/s",
            f"p50 {bare['p50_ms']:.1f} ms, p99 {bare['p99_ms']:.1f} ms",
            "baseline",
        ),
        (
            "(a) POST /api/trigger (median round)",
            f"{trig['rate']:,.0f} req/s",
            f"p50 {trig['p50_ms']:.1f} ms, p99 {trig['p99_ms']:.1f} ms"
            + (f", {trig['non_2xx']} non-2xx" if trig["non_2xx"] else ""),
            "",
        ),
        (
            "(a) ratio trigger / bare",
            f"{a['ratio']:.2f}",
            f"the median of {len(rounds)} rounds: " + ", ".join(f"{r['ratio']:.2f}" for r in rounds)
            if len(rounds) > 1
            else "",
            f">= 0.40: {_met(a['ratio'] >= 0.4)}",
        ),
        (
            "(a) trigger p99, the worst round",
            f"{worst_p99:.1f} ms",
            "",
            f"<= 50 ms: {_met(worst_p99 <= 50)}",
        ),
    ]


def _rows_b(noop: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [
        (
            "(b) Celery no-op drain",
            f"{noop['rate']:,.0f} tasks/s",
            f"{noop['tasks']:,} tasks",
            "baseline",
        ),
        (
            "(b) bulk PENDING -> SENT",
            f"{b['rate']:,.0f} notif/s",
            f"{b['notifications']:,} in {b['seconds']:.1f} s, ingest {b['ingest_rate']:,.0f}/s,"
            f" {b['novu_requests']} Novu calls",
            "",
        ),
        ("(b) ratio to no-op", f"{b['ratio']:.2f}", "", f">= 3.0: {_met(b['ratio'] >= 3.0)}"),
    ]


def _rows_c(c: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [
        (
            "(c) trigger -> SENT at 100/s, p50",
            f"{c['p50_ms']:.1f} ms",
            f"{c['triggers']} triggers, HTTP p50 {c['http_p50_ms']:.1f} ms",
            f"<= 25 ms: {_met(c['p50_ms'] <= 25)}",
        ),
        (
            "(c) trigger -> SENT at 100/s, p99",
            f"{c['p99_ms']:.1f} ms",
            f"max {c['max_ms']:.1f} ms, HTTP p99 {c['http_p99_ms']:.1f} ms",
            f"<= 100 ms: {_met(c['p99_ms'] <= 100)}",
        ),
    ]


def _rows_d(d: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    share = d.get("share_of_b")
    verdict = f">= 50 % of (b): {share:.0%} {_met(share >= 0.5)}" if share is not None else ""
    return [
        (
            "(d) bulk PENDING -> SENT, Novu +200 ms",
            f"{d['rate']:,.0f} notif/s",
            f"{d['notifications']:,} in {d['seconds']:.1f} s, {d['novu_requests']} Novu calls",
            verdict,
        )
    ]


def _rows_e(e: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    out = []
    for part in ("api", "worker"):
        processes = e.get(part) or []
        if not processes:
            continue
        peak = max(p["peak_rss_mb"] for p in processes)
        each = ", ".join(f"{p['peak_rss_mb']:.0f}" for p in processes)
        out.append(
            (
                f"(e) peak RSS, {part} processes",
                f"{peak:.0f} MB",
                f"per process: {each} MB",
                f"<= 150 MB each: {_met(peak <= 150)}",
            )
        )
    return out


# GET /api/notifications lookups of (f), by the query parameter they use (benchmarks/run.py).
LOOKUPS = ("transactionId", "recipient", "tag", "range")


def _rows_f(f: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    sizes = sorted(f, key=int)
    out = [
        (
            f"(f) {int(size):,} rows: list FAILED / cancel",
            f"{f[size]['list_p50_ms']:.1f} / {f[size]['cancel_p50_ms']:.1f} ms",
            f"p99 {f[size]['list_p99_ms']:.1f} / {f[size]['cancel_p99_ms']:.1f} ms",
            "",
        )
        for size in sizes
    ]
    lookups = [name for name in LOOKUPS if f"{name}_p50_ms" in f[sizes[0]]]
    if lookups:
        out += [
            (
                f"(f) {int(size):,} rows: lookup by {' / '.join(lookups)}",
                " / ".join(f"{f[size][f'{name}_p50_ms']:.1f}" for name in lookups) + " ms",
                "p99 " + " / ".join(f"{f[size][f'{name}_p99_ms']:.1f}" for name in lookups),
                "",
            )
            for size in sizes
        ]
    if len(sizes) < 2:
        return out
    small, large = f[sizes[0]], f[sizes[-1]]
    for name in ("list", "cancel", *lookups):
        ratio = large[f"{name}_p50_ms"] / small[f"{name}_p50_ms"]
        ratio99 = large[f"{name}_p99_ms"] / small[f"{name}_p99_ms"]
        out.append(
            (
                f"(f) {name}: {int(sizes[-1]):,} vs {int(sizes[0]):,} rows",
                f"x{ratio:.2f} (p50)",
                f"x{ratio99:.2f} (p99)",
                f"<= x2: {_met(ratio <= 2 and ratio99 <= 2)}",
            )
        )
    return out


def table(results: dict[str, Any]) -> str:
    """The rows as an aligned text table."""
    header = ("measure", "value", "baseline / detail", "target")
    body = rows(results)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in [header, tuple("-" * w for w in widths), *body]
    ]
    title = "XNovu benchmark" + (" (QUICK: smaller sizes)" if results.get("quick") else "")
    return title + "\n" + "\n".join(lines) + "\n\n" + cpu_table(results.get("cpu_seconds", {}))


def cpu_table(cpu: dict[str, dict[str, float]]) -> str:
    """CPU seconds each part of the stack used per stage; `other` is everything else that
    ran on the machine meanwhile (it competes for the same cores)."""
    if not cpu:
        return ""
    tail = ["other", "irq", "steal", "seconds"]
    parts = {name for stage in cpu.values() for name in stage} - set(tail)
    names = [*sorted(parts), *tail]
    header = ["CPU s by part", *names]
    body = [[stage, *(f"{cpu[stage].get(name, 0.0):.1f}" for name in names)] for stage in cpu]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.rjust(widths[i]) if i else cell.ljust(widths[i]) for i, cell in enumerate(row)
        )
        for row in [header, *body]
    ]
    contended = [
        f"{stage} ({cpu[stage]['other'] / cpu[stage]['seconds']:.1f} cores)"
        for stage in cpu
        if cpu[stage].get("seconds") and cpu[stage]["other"] / cpu[stage]["seconds"] > 0.25
    ]
    lines.append(
        "other = processes outside this benchmark; irq = kernel interrupt time (loopback"
        " networking); steal = time the hypervisor gave to other guests"
    )
    if contended:
        lines.append("contended stages (other processes' average use): " + ", ".join(contended))
    return "\n".join(lines)
