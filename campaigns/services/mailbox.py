"""Bounce and complaint reports read from a mailbox on a schedule (beat, every
MAB_INBOUND_POLL_SECONDS; or `mab inbound --maildir`): a Maildir (MAB_INBOUND_MAILDIR) and/or a POP3
mailbox (MAB_INBOUND_POP3_URL, `pop3://user:password@host:port` or `pop3s://…`).

POP3: each message is retrieved, processed in its own transaction, then marked for deletion; the
server deletes them at QUIT. A crash before QUIT deletes nothing and the next poll processes the
messages again, which changes nothing.

Each message in `new/` is processed in its own transaction (campaigns/services/feedback_mail.py)
and then moved to `cur/` (flag `S`, seen), so the next poll never reads it again; a message that
cannot be parsed or matched is still moved, after feedback_mail keeps a copy and counts it. A crash
between the commit and the move leaves the message in `new/`: the next poll processes it again, which
changes nothing (suppression and the complaint event are idempotent). Nothing is deleted.
"""

import logging
import os
import poplib
from collections import Counter
from pathlib import Path
from urllib.parse import unquote, urlsplit

from campaigns.db import session_scope
from campaigns.services import feedback_mail
from campaigns.settings import get_settings

log = logging.getLogger(__name__)


def poll_maildir(maildir: Path | None = None) -> dict[str, int]:
    """Process every message in `new/`; the number of messages by outcome."""
    configured = get_settings().inbound_maildir.strip()
    maildir = maildir or (Path(configured) if configured else None)
    if maildir is None:
        return {}
    new, cur = Path(maildir) / "new", Path(maildir) / "cur"
    if not new.is_dir():  # a wrong path is said, not silently read as empty
        log.warning("Maildir %s has no new/ folder: nothing read", maildir)
        return {"no new/ folder": 1}
    cur.mkdir(exist_ok=True)
    outcomes: Counter = Counter()
    for path in sorted(new.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        with session_scope() as session:  # one message, one commit: a bad one never holds back the rest
            line = feedback_mail.process_report(session, path.read_bytes())
        outcomes[line.split(":", 1)[0]] += 1
        name = path.name if ":2," in path.name else f"{path.name}:2,S"
        os.replace(path, cur / name)  # after the commit: a crash before it only means one idempotent rerun
        log.info("maildir %s: %s", path.name, line, extra={"path": str(cur / name)})
    return dict(outcomes)


def poll_pop3(url: str | None = None) -> dict[str, int]:
    """Process and delete every message of a POP3 mailbox; the number of messages by outcome."""
    url = (url if url is not None else get_settings().inbound_pop3_url).strip()
    if not url:
        return {}
    parts = urlsplit(url)
    secure = parts.scheme == "pop3s"
    client_class = poplib.POP3_SSL if secure else poplib.POP3
    client = client_class(parts.hostname or "localhost", parts.port or (995 if secure else 110), timeout=30)
    outcomes: Counter = Counter()
    try:
        client.user(unquote(parts.username or ""))
        client.pass_(unquote(parts.password or ""))
        count, _ = client.stat()
        for number in range(1, count + 1):
            raw = b"\r\n".join(client.retr(number)[1]) + b"\r\n"
            with session_scope() as session:
                line = feedback_mail.process_report(session, raw)
            outcomes[line.split(":", 1)[0]] += 1
            client.dele(number)  # applied at QUIT, after every commit
            log.info("pop3 message %s: %s", number, line)
        client.quit()
    finally:
        client.close()
    return dict(outcomes)


def poll() -> dict[str, dict[str, int]]:
    """Beat's job: the configured Maildir and POP3 mailbox, outcomes of each."""
    return {"maildir": poll_maildir(), "pop3": poll_pop3()}
