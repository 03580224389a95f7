"""Plain factory functions for test data."""

import copy

from campaigns.db import session_scope
from campaigns.demo import FACTORS, SEGMENTS, TEMPLATE
from campaigns.services import keys

ROLES = ("admin", "marketer", "analyst", "ingest")


def api_keys() -> dict[str, str]:
    """One fresh key per role, committed."""
    out = {}
    with session_scope() as session:
        for role in ROLES:
            _, plaintext = keys.create_key(session, f"test {role}", role)
            out[role] = plaintext
    return out


def campaign_payload(**overrides) -> dict:
    payload = {
        "name": "Spring offer",
        "factors": copy.deepcopy(FACTORS),
        "exclusions": [],
        "segments": list(SEGMENTS),
        "objective": "conversion",
        "holdout_share": 0.1,
        "cadence": "manual",
        "landing_url": "https://shop.example.com/spring",
        "template": dict(TEMPLATE),
        "burn_in_min_sends": 0,
    }
    payload.update(overrides)
    return payload


def small_campaign_payload(**overrides) -> dict:
    """2 × 3 = 6 variants over two segments: fast to send, easy to reason about."""
    defaults = dict(
        factors={"tone": ["friendly", "urgent"], "offer": ["free_dessert", "free_drink", "two_for_one"]},
        segments=["champions", "hibernating"],
        template={
            "subject": "{{ tone }} news for {{ customer.first_name | default('you') }}",
            "html": '<p>{{ offer }}</p><a href="{{ landing_url }}">go</a> <a href="{{ unsubscribe_url }}">unsub</a>',
            "text": "{{ offer }} {{ landing_url }} {{ unsubscribe_url }}",
        },
    )
    return campaign_payload(**{**defaults, **overrides})


def customers(n: int, segments=("champions", "hibernating"), prefix: str = "c") -> list[dict]:
    return [
        {"external_id": f"{prefix}{i}", "email": f"{prefix}{i}@example.com", "segment": segments[i % len(segments)],
         "attributes": {"first_name": f"Name{i}"}}
        for i in range(n)
    ]
