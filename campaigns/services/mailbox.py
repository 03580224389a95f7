"""Bounce and complaint reports read from a Maildir on a schedule (beat, every
MAB_INBOUND_POLL_SECONDS; or `mab inbound --maildir`): point the bounce address's mailbox at
MAB_INBOUND_MAILDIR.

Each message in `new/` is processed in its own transaction (campaigns/services/feedback_mail.py)
and then moved to `cur/` (flag `S`, seen), so the next poll never reads it again; a message that
cannot be parsed or matched is still moved, after feedback_mail keeps a copy and counts it. A crash
between the commit and the move leaves the message in `new/`: the next poll processes it again, which
changes nothing (suppression and the complaint event are idempotent). Nothing is deleted.
"""

import logging
import os
from collections import Counter
from pathlib import Path

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
    cur.mkdir(parents=True, exist_ok=True)
    outcomes: Counter = Counter()
    for path in sorted(new.iterdir()) if new.is_dir() else []:
        if path.name.startswith(".") or not path.is_file():
            continue
        with session_scope() as session:  # one message, one commit: a bad one never holds back the rest
            line = feedback_mail.process_report(session, path.read_bytes())
        outcomes[line.split(":", 1)[0]] += 1
        name = path.name if ":2," in path.name else f"{path.name}:2,S"
        os.replace(path, cur / name)  # after the commit: a crash before it only means one idempotent rerun
        log.info("maildir %s: %s", path.name, line, extra={"path": str(cur / name)})
    return dict(outcomes)
