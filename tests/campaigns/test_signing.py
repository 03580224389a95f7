"""Signed link tokens: tampering fails, and rotating the signing secret breaks no link already
mailed while the old secret is listed in MAB_SIGNING_PREVIOUS_SECRETS."""

import pytest

from campaigns import signing
from campaigns.settings import get_settings


@pytest.fixture
def secrets(monkeypatch):
    def use(current: str, previous: str = "") -> None:
        monkeypatch.setenv("MAB_SIGNING_SECRET", current)
        monkeypatch.setenv("MAB_SIGNING_PREVIOUS_SECRETS", previous)
        get_settings.cache_clear()

    yield use
    monkeypatch.undo()
    get_settings.cache_clear()


def test_tampered_and_foreign_tokens_fail(secrets):
    secrets("current")
    token = signing.sign("unsub", 42)
    assert signing.verify("unsub", token) == 42
    purpose, send_id, mac = token.split(".")
    assert signing.verify("unsub", f"{purpose}.43.{mac}") is None  # another send
    assert signing.verify("click", token) is None  # another purpose
    assert signing.verify("unsub", f"{purpose}.{send_id}.{mac[:-1]}0") is None
    assert signing.verify("unsub", "garbage") is None
    secrets("someone-else")
    assert signing.verify("unsub", token) is None


def test_rotation_keeps_mailed_links_working_during_the_grace_period(secrets):
    secrets("old")
    mailed = signing.sign("unsub", 7)
    mailed_click = signing.sign("click-2", 7)  # a click token mailed before campaign ids were signed in
    mailed_click_now = signing.sign_click(2, 7, 3)
    secrets("new", previous="older, old")  # rotated: new links use "new", old ones still verify
    assert signing.verify("unsub", mailed) == 7
    assert signing.verify_click(mailed_click) == (7, 2, None)
    assert signing.verify_click(mailed_click_now) == (7, 2, 3)
    fresh = signing.sign("unsub", 7)
    assert fresh != mailed and signing.verify("unsub", fresh) == 7
    secrets("new")  # grace period over: the old secret is dropped
    assert signing.verify("unsub", mailed) is None
    assert signing.verify_click(mailed_click) is None and signing.verify_click(mailed_click_now) is None
    assert signing.verify("unsub", fresh) == 7


def test_click_tokens_name_their_campaign_and_refuse_any_change(secrets):
    secrets("current")
    token = signing.sign_click(0, 42, 5)
    assert token.startswith("click.42.5.") and signing.verify_click(token) == (42, 0, 5)
    assert signing.verify_click(signing.sign_click(3, 42, 5)) == (42, 3, 5)
    purpose, send_id, campaign_id, mac = token.split(".")
    for forged in (f"click.42.6.{mac}", f"click.43.5.{mac}", f"click-1.42.5.{mac}", f"click.42.{mac}",
                   f"click.042.5.{mac}", f"click-01.42.5.{mac}", f"click-².42.5.{mac}", f"unsub.42.5.{mac}",
                   f"click.42.5.{mac.upper()}", f"click.42.5.5.{mac}", token + "0", "click..5." + mac):
        assert signing.verify_click(forged) is None, forged


def test_tokens_are_hmac_sha256_of_purpose_and_subject_so_mailed_links_keep_working(secrets):
    """The MAC is computed from a cached keyed HMAC (a copy per token); the tokens must stay
    byte-for-byte what a one-shot HMAC-SHA256 gives, or every link already mailed would break.
    Switching secrets between tokens must not reuse the previous secret's key."""
    import hashlib
    import hmac

    def expected(secret: str, message: str) -> str:
        return hmac.digest(secret.encode(), message.encode(), hashlib.sha256).hex()[:32]

    for secret in ("first-secret", "second-secret", "first-secret"):
        secrets(secret)
        assert signing.sign("unsub", 42) == f"unsub.42.{expected(secret, 'unsub.42')}"
        assert signing.sign_click(3, 42, 7) == f"click-3.42.7.{expected(secret, 'click-3.42.7')}"
        assert signing.verify_click(signing.sign_click(0, 42, 7)) == (42, 0, 7)
