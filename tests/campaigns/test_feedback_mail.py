"""`mab inbound`: delivery status notifications (RFC 3464) and feedback-loop reports (RFC 5965) about
emails a real period delivered, matched by the original Message-ID; hard bounces and complaints
suppress the customer, everything else changes nothing and the unusable is kept and counted."""

import email
import email.policy

from sqlalchemy import select
from typer.testing import CliRunner

from campaigns.cli import app
from campaigns.db import session_scope
from campaigns.models import Customer, Event, PeriodStatus
from campaigns.services import feedback_mail, periods
from campaigns.settings import get_settings
from tests.campaigns.test_periods import new_period, outbox_files, setup_campaign


def original_headers(raw: bytes) -> str:
    return raw.split(b"\r\n\r\n", 1)[0].decode()


def dsn(original: bytes, recipient: str, action: str = "failed", status: str = "5.1.1") -> bytes:
    """A bounce as Postfix writes it: human part, delivery-status, the original's headers."""
    return (
        "From: MAILER-DAEMON@mx.example.net\r\nTo: news@example.com\r\nSubject: Undelivered Mail Returned\r\n"
        "Message-ID: <bounce-1@mx.example.net>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you that your message could not be "
        "delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\nArrival-Date: Fri,  4 Dec 2026 10:00:00 +0000\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nOriginal-Recipient: rfc822;{recipient}\r\n"
        f"Action: {action}\r\nStatus: {status}\r\nDiagnostic-Code: smtp; 550 {status} no such user\r\n"
        f"\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n{original_headers(original)}\r\n--B--\r\n"
    ).encode()


def arf(original: bytes, recipient: str | None, feedback_type: str = "abuse") -> bytes:
    """A feedback-loop report as a mailbox provider sends it: the whole original attached."""
    rcpt = f"Original-Rcpt-To: {recipient}\r\n" if recipient else ""
    return (
        "From: fbl@isp.example\r\nTo: fbl@example.com\r\nSubject: FW: complaint\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\r\n\r\n'
        "--F\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
        "--F\r\nContent-Type: message/feedback-report\r\n\r\n"
        f"Feedback-Type: {feedback_type}\r\nUser-Agent: FBL/1.0\r\nVersion: 1\r\n{rcpt}\r\n"
        "--F\r\nContent-Type: message/rfc822\r\n\r\n"
    ).encode() + original + b"\r\n--F--\r\n"


def delivered(n: int) -> list[tuple[str, bytes]]:
    """(recipient, raw) of the outbox emails of a fresh campaign's first period."""
    cid = setup_campaign(n)
    assert periods.run_period(new_period(cid)) == PeriodStatus.COMPLETED
    out = []
    for path in outbox_files(cid, 1):
        raw = path.read_bytes()
        out.append((str(email.message_from_bytes(raw, policy=email.policy.default)["To"]), raw))
    return out


def statuses() -> dict[str, str]:
    with session_scope() as s:
        return dict(s.execute(select(Customer.email, Customer.status)).all())


def process(raw: bytes) -> str:
    with session_scope() as s:
        return feedback_mail.process_report(s, raw)


def test_bounces_and_complaints_by_mail_suppress_exactly_their_customer(database_url, redis_server):
    mails = delivered(12)
    (a, raw_a), (b, raw_b), (c, raw_c), (d, raw_d), (e, raw_e) = mails[:5]
    assert process(dsn(raw_a, a)).startswith("hard bounce")
    assert process(dsn(raw_a, a)).endswith("already bounced")  # idempotent
    assert process(dsn(raw_b, b, action="delayed", status="4.2.2")).startswith("ignored")
    assert process(dsn(raw_c, c, status="5.7.1")).startswith("ignored")  # a policy block, not the address
    assert process(arf(raw_d, d)).startswith("complaint")
    assert process(arf(raw_d, d)).startswith("complaint")  # a repeated report: one event
    assert process(arf(raw_e, None)).startswith("complaint")  # redacted recipient: the Message-ID decides
    status = statuses()
    assert (status[a], status[b], status[c], status[d], status[e]) == (
        "bounced", "active", "active", "unsubscribed", "unsubscribed")
    assert sum(v == "active" for v in status.values()) == 12 - 3
    with session_scope() as s:
        complaints = s.execute(select(Event.send_id).where(Event.type == "complaint")).scalars().all()
    assert len(complaints) == 2


def test_reports_that_cannot_be_used_are_kept_and_change_nothing(sqlite_url, redis_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MAB_INBOUND_DIR", str(tmp_path / "inbound"))
    get_settings.cache_clear()
    mails = delivered(6)
    (a, raw_a), (b, raw_b) = mails[:2]
    forged = raw_a.replace(b"<send-", b"<send-9").replace(b"Message-ID: <send-9", b"Message-ID: <send-9", 1)
    cases = {
        "unparseable": [b"From: x@example.com\r\nSubject: out of office\r\n\r\nI am away.\r\n",
                        b"\x00\xff garbage", arf(raw_a, a, feedback_type="not-spam"),
                        dsn(raw_a, a).replace(b"Action: failed\r\n", b"")],
        "unmatched": [dsn(forged, a), dsn(raw_a, b),  # an unknown send; a bounce naming another address
                      arf(raw_b, "someone.else@example.com"),
                      dsn(raw_a, a).replace(b"Message-ID: <send-", b"X-Other: <send-")],
    }
    before = statuses()
    for outcome, reports in cases.items():
        for report in reports:
            assert process(report).startswith(outcome), report[:200]
        kept = sorted((tmp_path / "inbound" / outcome).glob("*.eml"))
        assert sorted(p.read_bytes() for p in kept) == sorted(reports)
    assert statuses() == before
    monkeypatch.undo()
    get_settings.cache_clear()


def test_mab_inbound_reads_stdin_and_files(sqlite_url, redis_server, tmp_path):
    (a, raw_a), (b, raw_b) = delivered(4)[:2]
    result = CliRunner().invoke(app, ["inbound"], input=dsn(raw_a, a))
    assert result.exit_code == 0 and result.output.startswith("stdin: hard bounce"), result.output
    path = tmp_path / "fbl.eml"
    path.write_bytes(arf(raw_b, b))
    result = CliRunner().invoke(app, ["inbound", str(path)])
    assert result.exit_code == 0 and "complaint" in result.output, result.output
    assert (statuses()[a], statuses()[b]) == ("bounced", "unsubscribed")
