"""The mailto: of List-Unsubscribe, processed for real: a reply built from a delivered email's
header (as a mail client does) unsubscribes exactly that customer; forged or missing tokens
change nothing."""

import email
import email.policy
from email.message import EmailMessage
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select

from campaigns import signing
from campaigns.db import session_scope
from campaigns.models import Customer, CustomerStatus, Event, PeriodStatus, Send
from campaigns.services import inbound, periods
from tests.campaigns.test_periods import new_period, outbox_files, setup_campaign


def mailto_reply(delivered: bytes, subject: str | None = None) -> bytes:
    """What a mail client sends for the header's mailto: To and Subject from the URL."""
    msg = email.message_from_bytes(delivered, policy=email.policy.default)
    mailto = next(t for t in str(msg["List-Unsubscribe"]).replace(" ", "").split(",") if t.startswith("<mailto:"))
    parts = urlsplit(mailto.strip("<>"))
    reply = EmailMessage()
    reply["From"] = msg["To"]
    reply["To"] = parts.path
    reply["Subject"] = subject if subject is not None else parse_qs(parts.query)["subject"][0]
    reply.set_content("unsubscribe")
    return reply.as_bytes()


def statuses() -> dict[str, str]:
    with session_scope() as s:
        return dict(s.execute(select(Customer.email, Customer.status)).all())


def test_mailto_unsubscribe_is_processed_and_forgeries_are_ignored(database_url, redis_server):
    cid = setup_campaign(40)
    pid = new_period(cid)
    assert periods.run_period(pid) == PeriodStatus.COMPLETED
    first, second = (f.read_bytes() for f in outbox_files(cid, 1)[:2])
    target = email.message_from_bytes(first, policy=email.policy.default)["To"]
    before = statuses()

    # a forged token, a token for another purpose, and no token at all: nothing changes
    with session_scope() as s:
        send_id = s.execute(select(Send.id).where(Send.period_id == pid)).scalars().first()
        forged = f"unsub.{send_id}.{'0' * 32}"
        assert inbound.process_message(s, mailto_reply(second, forged)) == "ignored: invalid or unknown token"
        click = signing.sign("click", send_id)
        assert inbound.process_message(s, mailto_reply(second, click)) == "ignored: no unsubscribe token"
        assert inbound.process_message(s, mailto_reply(second, "please stop")) == "ignored: no unsubscribe token"
    assert statuses() == before

    # the genuine reply, twice (mail gets resent): one customer unsubscribed, one event stored
    for _ in range(2):
        with session_scope() as s:
            assert inbound.process_message(s, mailto_reply(first)).startswith("unsubscribed")
    after = statuses()
    assert after[target] == CustomerStatus.UNSUBSCRIBED
    assert {k: v for k, v in after.items() if k != target} == {k: v for k, v in before.items() if k != target}
    with session_scope() as s:
        assert len(s.execute(select(Event).where(Event.type == "unsubscribe")).scalars().all()) == 1

    # and the next period leaves that customer out
    pid2 = new_period(cid)
    assert periods.run_period(pid2) == PeriodStatus.COMPLETED
    with session_scope() as s:
        mailed = set(s.execute(select(Customer.email).join(Send, Send.customer_id == Customer.id)
                               .where(Send.period_id == pid2)).scalars())
    assert target not in mailed and len(mailed) == 39


def test_the_cli_processes_inbound_messages_from_files_and_stdin(database_url, redis_server, tmp_path):
    import os
    import subprocess
    import sys

    cid = setup_campaign(10)
    pid = new_period(cid)
    assert periods.run_period(pid) == PeriodStatus.COMPLETED
    first, second = (f.read_bytes() for f in outbox_files(cid, 1)[:2])
    (tmp_path / "a.eml").write_bytes(mailto_reply(first))
    (tmp_path / "junk.eml").write_bytes(mailto_reply(first, "hello"))
    env = {**os.environ}
    cli = [sys.executable, "-m", "campaigns.cli", "unsubscribe-mail"]
    out = subprocess.run([*cli, str(tmp_path / "a.eml"), str(tmp_path / "junk.eml")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "a.eml: unsubscribed" in out.stdout and "junk.eml: ignored: no unsubscribe token" in out.stdout
    out = subprocess.run(cli, input=mailto_reply(second).decode(), env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "stdin: unsubscribed" in out.stdout, out.stderr
    assert list(statuses().values()).count(CustomerStatus.UNSUBSCRIBED) == 2
