"""Novu's token bucket as the emulator evaluates it, step by step on a given clock (ms)."""

from __future__ import annotations

from novu_emulator.ratelimit import Category, TokenBucket


def free_tier() -> TokenBucket:
    return TokenBucket(60, Category.TRIGGER, "free")  # 300 a window, burst 330, 1 per 16.7 ms


def test_a_bulk_that_does_not_fit_waits_for_the_missing_tokens() -> None:
    bucket = free_tier()

    admitted = [bucket.take(100, now_ms=t) for t in (0, 1, 2)]
    refused = bucket.take(100, now_ms=3)

    assert [v.allowed for v in admitted] == [True, True, True]
    assert [dict(v.headers)["RateLimit-Remaining"] for v in admitted] == ["230", "130", "30"]
    assert not refused.allowed
    assert dict(refused.headers)["RateLimit-Remaining"] == "0"
    # 70 missing tokens at one per 1000/60 ms: 1166.7 ms after the bucket was filled.
    assert refused.reset_seconds == 2


def test_a_refused_cost_is_refused_at_once_until_its_reset_other_costs_are_not() -> None:
    bucket = free_tier()
    for t in (0, 1, 2):
        assert bucket.take(100, now_ms=t).allowed
    assert not bucket.take(100, now_ms=3).allowed

    single = bucket.take(1, now_ms=4)
    blocked = bucket.take(100, now_ms=1100)
    after_reset = bucket.take(100, now_ms=1200)

    assert single.allowed
    assert dict(single.headers)["RateLimit-Remaining"] == "29"
    # 1100 ms: 29 + 66 refilled tokens would not be enough anyway, and Novu does not look.
    assert not blocked.allowed
    # 1200 ms: 29 + floor(1200 / 16.67) = 29 + 72 = 101 tokens, so 1 is left.
    assert after_reset.allowed
    assert dict(after_reset.headers)["RateLimit-Remaining"] == "1"


def test_tokens_are_not_refilled_while_the_bucket_can_pay() -> None:
    bucket = free_tier()
    bucket.take(1, now_ms=0)

    later = bucket.take(1, now_ms=9_000)  # a classic bucket would be full again

    assert dict(later.headers)["RateLimit-Remaining"] == "328"


def test_a_bucket_not_refilled_for_two_windows_expires_and_starts_full() -> None:
    bucket = free_tier()
    for t in (0, 1, 2):
        bucket.take(100, now_ms=t)

    fresh = bucket.take(1, now_ms=10_000)

    assert dict(fresh.headers)["RateLimit-Remaining"] == "329"


def test_headers_report_the_policy_as_novu_writes_it() -> None:
    verdict = TokenBucket(30, Category.GLOBAL, "free").take(1, now_ms=0)

    assert dict(verdict.headers) == {
        "RateLimit-Remaining": "164",
        "RateLimit-Limit": "150",
        "RateLimit-Reset": "1",
        "RateLimit-Policy": '150;w=5;burst=165;comment="token bucket";category="global";'
        'cost="single";serviceLevel="free"',
    }
