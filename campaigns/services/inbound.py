"""Inbound unsubscribe mail: what arrives at the `mailto:` of an email's List-Unsubscribe header.

The mailto carries the send's signed unsubscribe token in its subject
(`mailto:unsubscribe@domain?subject=unsub.<send id>.<mac>`), and mail clients send it back
unchanged. Only a genuine token unsubscribes: the sender address of inbound mail is trivially
forged, so it is never trusted on its own. Operators hand each inbound message to
`mab unsubscribe-mail` (e.g. a Postfix pipe transport, or a mailbox drained by a cron job).
"""

import re
from email import message_from_bytes, policy

from sqlmodel import Session

from campaigns.errors import NotFound
from campaigns.services import tracking

TOKEN = re.compile(r"\bunsub\.\d+\.[0-9a-f]{32}\b")


def token_of(raw: bytes) -> str | None:
    """The unsubscribe token in the message's subject (or, failing that, its first text part)."""
    message = message_from_bytes(raw, policy=policy.default)
    found = TOKEN.search(str(message.get("Subject", "")))
    if found is None:
        body = message.get_body(preferencelist=("plain",))
        found = TOKEN.search(body.get_content()) if body is not None else None
    return found.group(0) if found else None


def process_message(session: Session, raw: bytes) -> str:
    """Unsubscribe the customer a genuine token names (idempotent); say what happened."""
    token = token_of(raw)
    if token is None:
        return "ignored: no unsubscribe token"
    try:
        tracking.unsubscribe_send(session, token, apply=True)
    except NotFound:
        return "ignored: invalid or unknown token"
    return f"unsubscribed (send {token.split('.')[1]})"
