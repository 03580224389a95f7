"""SpamAssassin (Debian's package, local rules only) scores the demo campaign's emails, built and
DKIM-signed exactly as they are sent, at 0 or below; `mab check-email` runs the same check."""

import re

import pytest
from typer.testing import CliRunner

from campaigns import spam_check
from campaigns.cli import app
from campaigns.db import session_scope
from campaigns.demo import SEGMENTS, demo_campaign
from campaigns.schemas import CampaignCreate, CustomerIn
from campaigns.services import campaigns, customers
from campaigns.settings import get_settings
from tests.campaigns.test_dkim_signing import write_key

pytestmark = pytest.mark.skipif(not spam_check.available(),
                                reason="spamassassin is not installed (Debian: apt-get install spamassassin)")


@pytest.fixture
def demo(sqlite_url, tmp_path, monkeypatch):
    """The demo campaign and a few demo customers, with an RSA and an Ed25519 DKIM key."""
    monkeypatch.setenv("MAB_DKIM_KEYS", f"s1={write_key(tmp_path / 'r.pem')},"
                                        f"ed1={write_key(tmp_path / 'e.pem', 'ed25519')}")
    get_settings.cache_clear()
    names = ["Ana", "Ben", "Chloé", "Dev"]
    rows = [CustomerIn(external_id=f"demo-{i}", email=f"demo{i}@example.com", segment=SEGMENTS[i % 8],
                       attributes={"first_name": names[i % 4]}) for i in range(16)]
    with session_scope() as s:
        customers.import_customers(s, customers.json_rows(rows))
        cid = campaigns.create(s, CampaignCreate(**demo_campaign())).id
    yield cid
    monkeypatch.undo()
    get_settings.cache_clear()


def test_the_demos_emails_score_zero_or_below(demo):
    with session_scope() as s:
        messages = spam_check.campaign_messages(s, demo, get_settings(), limit=4)
    assert len(messages) == 4
    for label, raw in messages:
        assert raw.startswith(b"DKIM-Signature:") and b"\r\nList-Id: " in raw
        result = spam_check.score(raw, label)
        assert result.passed, result
        assert "LIST_PARTIAL_SHORT_MSG" not in result.rules


def test_the_check_catches_a_spammy_email():
    """The check can fail: a message without List-Id, shouting spam phrases, scores above 0."""
    raw = (b"From: x@example.com\r\nTo: y@example.com\r\nSubject: FREE!!! WIN CASH NOW $$$ 100% FREE\r\n"
           b"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n"
           b"List-Unsubscribe: <https://x/u>\r\nMIME-Version: 1.0\r\nContent-Type: text/html\r\n\r\n"
           b"<html><body><font size=7>CLICK HERE!!! Viagra, cheap meds, act now, limited time, "
           b"100% free, no credit check, winner!</font></body></html>\r\n")
    result = spam_check.score(raw)
    assert not result.passed and result.score > 1, result


def test_mab_check_email_prints_each_score(demo):
    result = CliRunner().invoke(app, ["check-email", str(demo), "--samples", "2"])
    assert result.exit_code == 0, result.output
    lines = re.findall(r"^\s*(-?[0-9.]+)\s+ok\s+(.+?):", result.output, re.M)
    assert [label.split(" ")[0] for _, label in lines] == ["baseline", "variant"]
    assert "worst score" in result.output
    assert CliRunner().invoke(app, ["check-email", "999"]).exit_code == 1
