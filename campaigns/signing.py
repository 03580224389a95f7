"""HMAC-signed tokens that identify a send in tracking and unsubscribe links.

A token is `<purpose>.<send id>.<mac>`; a tampered or foreign token fails verification and
records nothing. The comparison is constant-time.
"""

import hashlib
import hmac

from campaigns.settings import get_settings


def _mac(purpose: str, send_id: int, secret: str) -> str:
    # hmac.digest: the one-shot C path (three tokens per email, millions of emails per period)
    return hmac.digest(secret.encode(), f"{purpose}.{send_id}".encode(), hashlib.sha256).hex()[:32]


def sign(purpose: str, send_id: int) -> str:
    return f"{purpose}.{send_id}.{_mac(purpose, send_id, get_settings().signing_secret)}"


def verify(purpose: str, token: str) -> int | None:
    """The send id the token names, or None when it is not a genuine token for `purpose`. Tokens
    signed with the current secret or any of MAB_SIGNING_PREVIOUS_SECRETS verify (rotation)."""
    try:
        got_purpose, raw_id, mac = token.split(".")
        send_id = int(raw_id)
    except ValueError:
        return None
    if got_purpose != purpose:
        return None
    settings = get_settings()
    secrets = [settings.signing_secret, *(s.strip() for s in settings.signing_previous_secrets.split(",") if s.strip())]
    genuine = False
    for secret in secrets:  # every secret is tried: the time taken says nothing about which matched
        genuine |= hmac.compare_digest(_mac(purpose, send_id, secret), mac)
    return send_id if genuine else None


def verify_click(token: str) -> tuple[int, int] | None:
    """(send id, link number) of a genuine click token: `click` is the landing URL (0), `click-N`
    the template's N-th literal link."""
    purpose = token.split(".", 1)[0]
    if purpose == "click":
        link = 0
    elif purpose.startswith("click-") and purpose[6:].isdigit():
        link = int(purpose[6:])
    else:
        return None
    send_id = verify(purpose, token)
    return None if send_id is None else (send_id, link)
