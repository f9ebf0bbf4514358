"""REDIS_URL's forms (shared/redis_client.py, shared/settings.py): Celery's `sentinel://` list,
refused whole when a part is wrong or the master is not named."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.redis_client import parse_sentinel_url
from shared.settings import Settings


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("sentinel://h1", ([("h1", 26379)], 0, None)),
        (
            "sentinel://:s%40cret@h1:26380/2;sentinel://h2:26381;sentinel://h3",
            ([("h1", 26380), ("h2", 26381), ("h3", 26379)], 2, "s@cret"),
        ),
        ("sentinel://h1:1; sentinel://h2:2/3 ;", ([("h1", 1), ("h2", 2)], 3, None)),
    ],
)
def test_celerys_sentinel_form_is_read(url, parsed):
    assert parse_sentinel_url(url) == parsed


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_URL": "sentinel://h1:26379"}, "set REDIS_SENTINEL_MASTER too"),
        (
            {"REDIS_URL": "redis://r", "RATE_LIMIT_REDIS_URL": "sentinel://h1"},
            "RATE_LIMIT_REDIS_URL is a sentinel:// URL: set REDIS_SENTINEL_MASTER too",
        ),
        (
            {"REDIS_URL": "sentinel://h1;redis://h2", "REDIS_SENTINEL_MASTER": "m"},
            "REDIS_URL: not a sentinel:// URL: 'redis://h2'",
        ),
        ({"REDIS_URL": "sentinel://:26379", "REDIS_SENTINEL_MASTER": "m"}, "without a host"),
        ({"REDIS_URL": "sentinel://h1/zero", "REDIS_SENTINEL_MASTER": "m"}, "is a number"),
    ],
)
def test_a_sentinel_url_that_cannot_work_stops_the_start(env, message):
    with pytest.raises(ValidationError, match=message):
        Settings.model_validate(env)


def test_a_whole_sentinel_setting_is_kept():
    settings = Settings.model_validate(
        {"REDIS_URL": "sentinel://h1;sentinel://h2/1", "REDIS_SENTINEL_MASTER": "xnovu"}
    )
    assert settings.require_sentinel_master() == "xnovu"
