"""A Maildir and a POP3 mailbox (a real Dovecot) polled on a schedule: every report in new/ is
processed once and moved to cur/ (nothing read twice, nothing deleted), a POP3 message is deleted
after it is recorded, the unusable ones are kept and counted like `mab inbound` does, and a
rerun after a crash before the move changes nothing."""

import shutil

import pytest
from typer.testing import CliRunner

from campaigns.cli import app
from campaigns.settings import get_settings
from tests.campaigns.test_feedback_mail import arf, delivered, dsn, statuses
from tests.pop3_server import Pop3Server
from worker import tasks
from worker.app import celery_app


def test_maildir_is_polled_once_per_message(sqlite_url, redis_server, tmp_path, monkeypatch):
    maildir = tmp_path / "bounces"
    (maildir / "new").mkdir(parents=True)
    monkeypatch.setenv("MAB_INBOUND_MAILDIR", str(maildir))
    monkeypatch.setenv("MAB_INBOUND_DIR", str(tmp_path / "inbound"))
    get_settings.cache_clear()
    (a, raw_a), (b, raw_b), (c, _) = delivered(6)[:3]
    (maildir / "new" / "1.host").write_bytes(dsn(raw_a, a))
    (maildir / "new" / "2.host").write_bytes(arf(raw_b, b))
    (maildir / "new" / "3.host").write_bytes(b"Subject: out of office\r\n\r\nback monday\r\n")
    (maildir / "new" / ".hidden").write_bytes(b"not a message")  # Maildir readers skip dot files

    assert tasks.poll_inbound_mailbox()["maildir"] == {"hard bounce": 1, "complaint": 1, "unparseable": 1}
    assert sorted(p.name for p in (maildir / "cur").iterdir()) == ["1.host:2,S", "2.host:2,S", "3.host:2,S"]
    assert [p.name for p in (maildir / "new").iterdir()] == [".hidden"]
    assert tasks.poll_inbound_mailbox()["maildir"] == {}  # nothing is read twice
    status = statuses()
    assert (status[a], status[b], status[c]) == ("bounced", "unsubscribed", "active")

    # a crash between the commit and the move: the message is processed again, to no effect
    shutil.copy(maildir / "cur" / "1.host:2,S", maildir / "new" / "1.host")
    result = CliRunner().invoke(app, ["inbound", "--maildir", str(maildir)])
    assert result.exit_code == 0 and '"hard bounce": 1' in result.output, result.output
    assert statuses() == status
    assert len(list((get_settings().inbound_dir / "unparseable").iterdir())) == 1


def test_a_wrong_maildir_path_is_said(tmp_path):
    assert tasks.mailbox.poll_maildir(tmp_path / "typo") == {"no new/ folder": 1}
    assert not (tmp_path / "typo").exists()


def test_beat_polls_the_mailbox():
    entry = celery_app.conf.beat_schedule["poll-inbound-mailbox"]
    assert entry["task"] == "worker.tasks.poll_inbound_mailbox" and entry["task"] in celery_app.tasks


def test_no_maildir_configured_polls_nothing(monkeypatch, tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "1.host").write_bytes(b"Subject: x\r\n\r\nx\r\n")
    monkeypatch.chdir(tmp_path)  # an empty setting must not mean "the current directory"
    monkeypatch.setenv("MAB_INBOUND_MAILDIR", "")
    monkeypatch.setenv("MAB_INBOUND_POP3_URL", "")
    get_settings.cache_clear()
    assert tasks.poll_inbound_mailbox() == {"maildir": {}, "pop3": {}}
    assert (tmp_path / "new" / "1.host").exists()
    get_settings.cache_clear()


@pytest.fixture
def pop3():
    if shutil.which("dovecot") is None:
        pytest.skip("no POP3 server here: apt-get install dovecot-pop3d")
    server = Pop3Server().start()
    yield server
    server.stop()


def test_pop3_mailbox_is_processed_and_emptied(sqlite_url, redis_server, tmp_path, monkeypatch, pop3):
    monkeypatch.setenv("MAB_INBOUND_POP3_URL", pop3.url())
    monkeypatch.setenv("MAB_INBOUND_MAILDIR", "")
    monkeypatch.setenv("MAB_INBOUND_DIR", str(tmp_path / "inbound"))
    get_settings.cache_clear()
    (a, raw_a), (b, raw_b) = delivered(4)[:2]
    pop3.deliver("1.host", dsn(raw_a, a))
    pop3.deliver("2.host", arf(raw_b, b))
    assert tasks.poll_inbound_mailbox()["pop3"] == {"hard bounce": 1, "complaint": 1}
    assert tasks.poll_inbound_mailbox()["pop3"] == {}  # deleted at QUIT: nothing is read twice
    status = statuses()
    assert (status[a], status[b]) == ("bounced", "unsubscribed")
    get_settings.cache_clear()
