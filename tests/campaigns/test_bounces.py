"""Bounces at SMTP time, against a real SMTP server: a hard bounce (5.1.x) suppresses the address
from the next batch on; a recipient deferred (4xx) through every attempt, period after period, is
suppressed after MAB_SOFT_BOUNCE_PERIODS; a policy refusal (5.7.x) fails the send but keeps the address."""

from collections import Counter

import pytest
from sqlmodel import select

from campaigns.db import session_scope
from campaigns.delivery import DeliveryError
from campaigns.models import Customer, PeriodStatus
from campaigns.services import periods
from campaigns.services.bounces import smtp_bounce
from campaigns.settings import get_settings
from tests.campaigns import test_smtp
from tests.campaigns.test_periods import new_period, setup_campaign
from tests.campaigns.test_smtp import ledger

smtp = test_smtp.smtp  # the fixture: a real SMTP server the application delivers to


@pytest.mark.parametrize(("error", "kind"), [
    (DeliveryError("recipient refused: 550 5.1.1 no such user", True, code=550), "hard"),
    (DeliveryError("SMTP 550: b'5.2.1 mailbox disabled'", True, code=550), "hard"),
    (DeliveryError("SMTP 553: b'bad address syntax'", True, code=553), "hard"),
    (DeliveryError("SMTP 550: b'5.7.1 message refused by policy'", True, code=550), None),
    (DeliveryError("SMTP 552: b'message too big'", True, code=552), None),
    (DeliveryError("SMTP 554: b'transaction failed'", True, code=554), None),
    (DeliveryError("deferred 4 times: SMTP 451", True, code=451, deferred=True), "soft"),
    (DeliveryError("SMTP unavailable", False, connection_lost=True), None),
])
def test_which_refusals_are_bounces(error, kind):
    assert smtp_bounce(error) == kind


def statuses() -> dict[str, str]:
    with session_scope() as s:
        return {c.email: c.status for c in s.exec(select(Customer)).all()}


def test_hard_and_soft_bounces_suppress_the_address_for_the_next_periods(database_url, redis_server, smtp,
                                                                         monkeypatch):
    monkeypatch.setenv("MAB_SMTP_MAX_ATTEMPTS", "1")  # a 4xx is "deferred through every attempt" at once
    monkeypatch.setenv("MAB_SOFT_BOUNCE_PERIODS", "2")
    get_settings.cache_clear()
    hard, policy, full = "c7@example.com", "c8@example.com", "c9@example.com"
    smtp.handler.refuse(hard, "550 5.1.1 no such user", stage="RCPT")
    smtp.handler.refuse(policy, "550 5.7.1 refused by policy", stage="DATA")
    smtp.handler.refuse(full, "452 4.2.2 mailbox full", stage="RCPT")
    cid = setup_campaign(40)

    for number in (1, 2, 3):
        pid = new_period(cid)
        assert periods.run_period(pid) == PeriodStatus.COMPLETED
        sends = ledger(pid)
        assert hard not in sends or "suppressed" in sends[hard].error or number == 1
        status = statuses()
        assert status[hard] == "bounced"  # from the first period on
        assert status[policy] == "active"  # a policy block says nothing about the address
        assert status[full] == ("active" if number == 1 else "bounced")  # deferred in 2 periods in a row
        bounced = 1 if number == 1 else 2
        assert Counter(status.values()) == {"active": 40 - bounced, "bounced": bounced}
    # the server: the hard-bounced address was tried once, the mailbox-full one in two periods, the
    # policy-refused one every period, everyone else got one message per period
    attempts = Counter(a for (stage, a), n in smtp.handler.attempts.items() if stage == "RCPT" for _ in range(n))
    assert attempts[hard] == 1 and attempts[full] == 2 and attempts[policy] == 3
    per_recipient = smtp.handler.per_recipient()
    assert set(per_recipient) == {f"c{i}@example.com" for i in range(40)} - {hard, policy, full}
    assert set(per_recipient.values()) == {3}
