"""VERP return paths (variable envelope return path): each send's envelope sender is
`<local>+bounce.<send id>.<mac>@<domain>` built from MAB_VERP_ADDRESS (`bounces@mail.example.com`),
so a bounce names its send in the address it is delivered to, even when the remote server quotes
nothing of the original. The token is signed like tracking links (campaigns/signing.py), so a forged
address matches nothing. Empty MAB_VERP_ADDRESS: the envelope sender is the From address."""

import re

from campaigns import signing
from campaigns.settings import get_settings

PURPOSE = "bounce"
TOKEN = re.compile(rb"\+(bounce\.[0-9]{1,18}\.[0-9a-f]{32})@")


def envelope_sender(send_id: int) -> str | None:
    """The send's VERP envelope sender, or None when VERP is off."""
    base = get_settings().verp_address.strip()
    if not base:
        return None
    local, _, domain = base.rpartition("@")
    return f"{local}+{signing.sign(PURPOSE, send_id)}@{domain}"


def send_of(raw: bytes) -> int | None:
    """The send id of the first genuine VERP token in a message (its To:/Delivered-To: headers name
    the address the bounce was delivered to), or None."""
    for token in TOKEN.findall(raw):
        send_id = signing.verify(PURPOSE, token.decode())
        if send_id is not None:
            return send_id
    return None
