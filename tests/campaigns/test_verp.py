"""VERP return paths over a real SMTP server: each send's envelope sender carries its signed token,
and `mab inbound` matches a bounce delivered to that address even when it quotes nothing of the
original; a forged or foreign token matches nothing (then the quoted Message-ID still may)."""

import re

from campaigns import verp
from campaigns.models import PeriodStatus
from campaigns.services import periods
from tests.campaigns import test_smtp
from tests.campaigns.test_feedback_mail import dsn, process, statuses
from tests.campaigns.test_periods import new_period, setup_campaign

smtp = test_smtp.smtp  # the fixture: a real SMTP server the application delivers to


def bare_dsn(to: str, recipient: str, status: str = "5.1.1") -> bytes:
    """A bounce delivered to `to` that quotes no header of the original (some servers send these)."""
    return (
        f"From: MAILER-DAEMON@mx.example.net\r\nTo: {to}\r\nDelivered-To: {to}\r\nSubject: failure\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nundeliverable\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: {status}\r\n\r\n--B--\r\n"
    ).encode()


def test_verp_envelope_sender_and_matching(database_url, redis_server, smtp, monkeypatch):
    test_smtp.use_smtp(monkeypatch, smtp.port, verp_address="bounces@mail.example.com")
    cid = setup_campaign(6)
    assert periods.run_period(new_period(cid)) == PeriodStatus.COMPLETED
    received = smtp.handler.messages
    assert len(received) == 6
    senders = {m.rcpt_tos[0]: m.mail_from for m in received}
    assert all(re.fullmatch(r"bounces\+bounce\.\d+\.[0-9a-f]{32}@mail\.example\.com", s) for s in senders.values())
    assert len(set(senders.values())) == 6  # one return path per send
    (a, path_a), (b, path_b), (c, path_c) = list(senders.items())[:3]
    assert verp.send_of(path_a.encode()) is not None

    assert process(bare_dsn(path_a, a)).startswith("hard bounce")
    forged = re.sub(r"[0-9a-f]{32}@", "0" * 32 + "@", path_b)
    assert process(bare_dsn(forged, b)).startswith("unmatched")
    assert process(bare_dsn(path_c, b)).startswith("unmatched")  # c's return path, b's address
    # a token in the quoted original does not count; only where the report was delivered
    quoted = next(m.raw for m in received if m.rcpt_tos[0] == c)
    assert process(dsn(quoted.replace(b"\r\n\r\n", f"\r\nX-Note: {path_b}\r\n\r\n".encode(), 1), c)) \
        .startswith("hard bounce")  # matched by c's Message-ID, not b's token
    status = statuses()
    assert (status[a], status[b], status[c]) == ("bounced", "active", "bounced")


def test_verp_off_keeps_the_from_address(sqlite_url, redis_server, smtp):
    cid = setup_campaign(3)
    assert periods.run_period(new_period(cid)) == PeriodStatus.COMPLETED
    assert {m.mail_from for m in smtp.handler.messages} == {"news@example.com"}
