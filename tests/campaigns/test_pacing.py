"""Per-domain pacing: groups, the back-off's growth and cap, the rate window, the cap on connections,
state shared through Redis, and a real SMTP server deferring one domain while the others' mail goes on
and never seeing more connections of a capped group than its cap."""

import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select, update

from campaigns import metrics, pacing
from campaigns.db import session_scope
from campaigns.delivery import DeliveryError, SmtpBackend
from campaigns.models import Customer, SendChunk, SendPeriod
from campaigns.rendering import OutgoingEmail
from campaigns.services import periods, sending
from campaigns.settings import Settings, get_settings
from tests.campaigns.test_periods import new_period, setup_campaign
from tests.campaigns.test_smtp import ledger, plan, smtp, use_smtp  # noqa: F401 - the fixture
from tests.smtp_server import RecordingHandler, SmtpServer

GROUPS = Settings().smtp_pacing


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


def test_domains_fall_into_their_groups():
    assert pacing.group_of("A@GoogleMail.com", GROUPS) == "gmail"
    assert pacing.group_of("x@ymail.com", GROUPS) == pacing.group_of("x@aol.com", GROUPS) == "yahoo"
    assert pacing.group_of("x@msn.com", GROUPS) == "microsoft"
    assert pacing.group_of("x@gmail.com.example.org", GROUPS) == pacing.OTHERS


@pytest.mark.parametrize(("code", "text", "stage", "expected"), [
    (421, "421 4.7.0 try again later", True, True),
    (450, "450 4.7.28 rate limited", True, True),
    (452, "452 4.2.2 mailbox full", True, False),  # one recipient's trouble, not the provider's
    (421, "421 service not available", False, False),  # on connecting: the relay's trouble
    (550, "550 5.7.1 refused", True, False),
])
def test_what_counts_as_a_deferral(code, text, stage, expected):
    exc = DeliveryError(text, permanent=code >= 500, code=code, recipient_stage=stage)
    assert pacing.is_deferral(exc) is expected


def test_back_off_doubles_up_to_its_cap_and_resets_after_a_quiet_spell():
    settings = Settings(smtp_backoff_seconds=10, smtp_backoff_max_seconds=60)
    clock = Clock()
    pacer = pacing.Pacer(settings, state=pacing._LocalState(), clock=clock)
    before = metrics.SMTP_DEFERRALS.labels("gmail")._value.get()
    delays = []
    for _ in range(5):
        delays.append(pacer.deferred("gmail", "421 4.7.0"))
        assert pacer.wait_for("gmail") == pytest.approx(delays[-1])
        assert pacer.wait_for("yahoo") == 0  # other groups are not held
        clock.now += delays[-1]
    assert delays == [10, 20, 40, 60, 60]
    assert pacer.wait_for("gmail") == 0
    assert metrics.SMTP_DEFERRALS.labels("gmail")._value.get() == before + 5
    clock.now += 1000  # long after: the next deferral starts over
    assert pacer.deferred("gmail", "421") == 10


def test_rate_per_minute_holds_the_group_until_the_next_minute():
    settings = Settings(smtp_pacing={**GROUPS, "gmail": {"domains": ["gmail.com"], "per_minute": 3}})
    clock = Clock()
    clock.now = 60 * 1000 + 15
    pacer = pacing.Pacer(settings, state=pacing._LocalState(), clock=clock)
    assert [pacer.wait_for("gmail") for _ in range(4)] == [0, 0, 0, 45]
    assert pacer.wait_for("others") == 0  # unlimited
    clock.now += 45
    assert pacer.wait_for("gmail") == 0


def test_back_off_is_shared_through_redis(redis_server):
    settings = get_settings()
    one, two = pacing.Pacer(settings), pacing.Pacer(settings)  # two workers
    assert one.where == two.where == "redis"
    one.state.clear("yahoo")
    delay = one.deferred("yahoo", "421 4.7.0")
    assert 0 < two.wait_for("yahoo") <= delay
    assert two.deferred("yahoo", "421 4.7.0") == 2 * delay  # escalates across workers
    one.state.clear("yahoo")
    assert two.wait_for("yahoo") == 0


def test_without_redis_pacing_is_local(monkeypatch):
    monkeypatch.setenv("MAB_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    get_settings.cache_clear()
    try:
        assert pacing.Pacer(get_settings()).where == "local"
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_a_deferred_domain_waits_while_the_others_go_on_and_is_delivered_once(sqlite_url, redis_server, smtp,  # noqa: F811
                                                                              monkeypatch):
    monkeypatch.setenv("MAB_SMTP_BACKOFF_SECONDS", "0.3")
    monkeypatch.setenv("MAB_SMTP_PACING", json.dumps(GROUPS))
    get_settings.cache_clear()
    pacing.Pacer(get_settings()).state.clear("gmail")
    cid = setup_campaign(40)
    with session_scope() as s:  # every third customer moves to gmail.com
        s.execute(update(Customer).where(Customer.id % 3 == 0)
                  .values(email=func.replace(Customer.email, "example.com", "gmail.com")))
    pid = new_period(cid)
    chunk_ids = plan(cid, pid)
    with session_scope() as s:
        chunk = s.get(SendChunk, chunk_ids[0])
        first, last = chunk.first_send_id, chunk.last_send_id
    sends = ledger(pid)
    in_chunk = {a for a, row in sends.items() if first <= row.id <= last}
    gmail = {a for a in in_chunk if a.endswith("@gmail.com")}
    assert gmail and in_chunk - gmail
    refused = min(gmail, key=lambda a: sends[a].id)
    smtp.handler.refuse(refused, "421 4.7.0 too many messages, try again later", stage="RCPT", times=1)
    before = metrics.SMTP_DEFERRALS.labels("gmail")._value.get()

    outcome = sending.deliver_chunk(chunk_ids[0])

    assert outcome == "done"
    at = {m.rcpt_tos[0].lower(): m.at for m in smtp.handler.messages}
    # the other domain's mail went on while gmail backed off; gmail's came after, every address once
    assert max(at[a] for a in in_chunk - gmail) < min(at[a] for a in gmail)
    assert smtp.handler.per_recipient() == {a: 1 for a in in_chunk}
    assert smtp.handler.attempts[("RCPT", refused)] == 2
    # held rows were not tried during the back-off: one try each
    assert all(smtp.handler.attempts[("RCPT", a)] == 1 for a in gmail - {refused})
    assert metrics.SMTP_DEFERRALS.labels("gmail")._value.get() == before + 1
    final = ledger(pid)
    assert all(final[a].status == "sent" for a in in_chunk)
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Customer)) == 40


def test_an_address_deferred_on_every_pass_fails_alone(sqlite_url, redis_server, smtp, monkeypatch):  # noqa: F811
    monkeypatch.setenv("MAB_SMTP_BACKOFF_SECONDS", "0.1")
    monkeypatch.setenv("MAB_SMTP_MAX_ATTEMPTS", "2")
    get_settings.cache_clear()
    pacing.Pacer(get_settings()).state.clear(pacing.OTHERS)
    cid = setup_campaign(10)
    pid = new_period(cid)
    chunk_ids = plan(cid, pid)
    sends = ledger(pid)
    stuck = min(sends, key=lambda a: sends[a].id)  # the first send of the first chunk
    smtp.handler.refuse(stuck, "421 4.7.0 try again later", stage="RCPT")  # always

    assert [sending.deliver_chunk(c) for c in chunk_ids][-1] == "done; period completed"
    assert smtp.handler.attempts[("RCPT", stuck)] == 2  # once per pass, then a recorded failure
    final = ledger(pid)
    assert final[stuck].status == "failed" and "deferred 2 times" in final[stuck].error
    assert smtp.handler.per_recipient() == {a: 1 for a in set(sends) - {stuck}}


# --- connections per domain group -------------------------------------------------------------------------


def capped(connections: int, lease: float = 120.0) -> Settings:
    return Settings(smtp_pacing={**GROUPS, "gmail": {**GROUPS["gmail"], "connections": connections}},
                    smtp_connection_lease_seconds=lease)


@pytest.mark.parametrize("shared", ["local", "redis"])
def test_connection_slots_are_capped_renewed_released_and_expire(shared, redis_server):
    settings = capped(2, lease=60)
    clock = Clock()
    state = pacing._LocalState() if shared == "local" else pacing._state_for(get_settings())[0]
    if shared == "redis":
        state.r.delete("mab:pacing:connections:gmail")
    one, two = (pacing.Pacer(settings, state=state, clock=clock) for _ in range(2))  # two workers
    before = metrics.SMTP_CONNECTION_WAITS.labels("gmail")._value.get()
    assert one.acquire_connection("gmail", "a") and two.acquire_connection("gmail", "b")
    assert not two.acquire_connection("gmail", "c")  # both slots taken
    assert one.acquire_connection("gmail", "a")  # a holder renews its own slot
    one.release_connection("gmail", "a")
    assert two.acquire_connection("gmail", "c")
    assert not one.acquire_connection("gmail", "d")
    clock.now += 40
    assert two.acquire_connection("gmail", "c")  # renewed at 40 s: lives until 100 s
    clock.now += 30  # b was last renewed 70 s ago: its worker is gone, its slot expired
    assert one.acquire_connection("gmail", "d")
    assert not one.acquire_connection("gmail", "e")
    assert metrics.SMTP_CONNECTION_WAITS.labels("gmail")._value.get() == before + 3
    assert one.connection_limit("gmail") == 2 and one.connection_limit("yahoo") == 0


class SessionsHandler(RecordingHandler):
    """Records, per recipient domain, the most SMTP sessions open at once (EHLO to QUIT)."""

    def __init__(self):
        super().__init__()
        self.open: dict[int, str | None] = {}  # session -> the domain of its first recipient
        self.peak: Counter = Counter()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        with self._lock:
            self.open[id(session)] = None
        return await super().handle_EHLO(server, session, envelope, hostname, responses)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self._lock:
            if self.open.get(id(session)) is None:
                domain = address.rsplit("@", 1)[1].lower()
                self.open[id(session)] = domain
                self.peak[domain] = max(self.peak[domain], sum(d == domain for d in self.open.values()))
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_QUIT(self, server, session, envelope):
        with self._lock:
            self.open.pop(id(session), None)
        return "221 Bye"


@pytest.fixture
def settings_restored(monkeypatch):
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


def test_a_capped_group_never_has_more_connections_than_its_cap_across_workers(redis_server, settings_restored):
    """Four workers (threads, each with its own backend and pacer, sharing Redis) send to a real SMTP
    server; gmail is capped at one connection: the server never sees two gmail sessions at once, the
    uncapped rest goes on in parallel, every message arrives once."""
    with SmtpServer(handler=SessionsHandler()) as server:
        use_smtp(settings_restored, server.port)
        settings_restored.setenv("MAB_SMTP_PACING", json.dumps(capped(1).smtp_pacing))
        get_settings.cache_clear()
        settings = get_settings()
        pacing.Pacer(settings).state.r.delete("mab:pacing:connections:gmail")
        start = threading.Barrier(4)

        def worker(n: int) -> None:
            backend = SmtpBackend(settings, pacing.Pacer(settings))
            start.wait()
            try:
                for i in range(8):
                    to = f"w{n}-{i}@{'gmail.com' if i % 2 == 0 else 'example.com'}"
                    while backend.connection_wait(backend.group(to)) > 0:
                        time.sleep(0.005)
                    message = OutgoingEmail(to=to, sender="news@example.org", message_id=f"<{n}.{i}@x>",
                                            raw=b"Subject: x\r\n\r\nx\r\n")
                    backend.deliver(n * 100 + i, message)
            finally:
                backend.close()

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        handler = server.handler
        assert handler.per_recipient() == {f"w{n}-{i}@{d}": 1 for n in range(4) for i in range(8)
                                           for d in [("gmail.com", "example.com")[i % 2]]}
        assert handler.peak["gmail.com"] == 1
        assert handler.peak["example.com"] >= 1
        assert handler.open == {}  # every session was closed


def test_a_chunk_with_a_capped_group_is_delivered_once_and_frees_its_slot(sqlite_url, redis_server, smtp,  # noqa: F811
                                                                          monkeypatch):
    monkeypatch.setenv("MAB_SMTP_PACING", json.dumps(capped(1).smtp_pacing))
    get_settings.cache_clear()
    redis = pacing.Pacer(get_settings()).state.r
    redis.delete("mab:pacing:connections:gmail")
    cid = setup_campaign(30)
    with session_scope() as s:  # every third customer moves to gmail.com
        s.execute(update(Customer).where(Customer.id % 3 == 0)
                  .values(email=func.replace(Customer.email, "example.com", "gmail.com")))
    pid = new_period(cid)
    chunk_ids = plan(cid, pid)

    assert [sending.deliver_chunk(c) for c in chunk_ids][-1] == "done; period completed"
    sends = ledger(pid)
    assert smtp.handler.per_recipient() == {a: 1 for a in sends}
    assert any(a.endswith("@gmail.com") for a in sends)
    assert all(row.status == "sent" for row in sends.values())
    assert redis.zcard("mab:pacing:connections:gmail") == 0  # released when the chunk closed its backend
    # gmail's own connection, and one for the rest, per chunk
    assert smtp.handler.connections == 2 * len(chunk_ids)


# --- deferrals in the period's state ----------------------------------------------------------------------


def test_a_group_backing_off_shows_in_the_periods_state_reason(sqlite_url, redis_server, smtp, monkeypatch):  # noqa: F811
    pacer = pacing.Pacer(get_settings())
    for group in GROUPS:
        pacer.state.clear(group)
    cid = setup_campaign(10)
    pid = new_period(cid)
    plan(cid, pid)

    def shown() -> dict:
        with session_scope() as s:
            return periods.public(s, s.get(SendPeriod, pid))

    assert shown()["state_reason"] is None
    pacer.deferred("gmail", "421 4.7.0 try later")
    delay = pacer.deferred("gmail", "421 4.7.28 rate limited")
    body = shown()
    assert body["state"] in ("sending", "stalled")
    reason = body["state_reason"]
    assert reason.startswith("deliveries to gmail (gmail.com, googlemail.com) deferred by the receiving servers: "
                             "backing off until ")
    assert "after 2 deferrals in a row" in reason and "yahoo" not in reason
    (group, until, level), = pacing.backoffs(get_settings())
    assert (group, level) == ("gmail", 2) and until == pytest.approx(time.time() + delay, abs=5)
    assert f"{datetime.fromtimestamp(until, UTC):%H:%M:%S} UTC" in reason
    monkeypatch.setenv("MAB_DELIVERY_BACKEND", "outbox")  # no SMTP, no pacing: nothing to say
    get_settings.cache_clear()
    assert shown()["state_reason"] is None
    monkeypatch.setenv("MAB_DELIVERY_BACKEND", "smtp")
    get_settings.cache_clear()
    pacer.state.clear("gmail")  # the back-off is over
    assert shown()["state_reason"] is None


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_a_limit_that_is_not_a_count_is_refused_naming_the_group(bad):
    with pytest.raises(ValidationError, match=r"gmail\.connections must be a whole number"):
        Settings(smtp_pacing={**GROUPS, "gmail": {**GROUPS["gmail"], "connections": bad}})
