"""Links inside sent emails: every literal link is rewritten to a signed tracking link that records a
click and redirects to the campaign's own URL; forged tokens record nothing; scanner and bot clicks are
stored but never rewarded; unsubscribe is RFC 8058 and records one unsubscribe event."""

import email
import email.policy
import re
from datetime import timedelta

from sqlalchemy import select, update

from campaigns import signing
from campaigns.db import session_scope
from campaigns.models import Customer, Event, Send, utcnow
from campaigns.services import clicks, events, periods
from campaigns.settings import get_settings
from tests.api.test_events_api import QUEUE, queued_tasks, run_worker
from tests.factories import small_campaign_payload

BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari"


def sent_email(api) -> tuple[int, email.message.EmailMessage]:
    payload = small_campaign_payload(segments=["champions"])
    payload["template"]["html"] = (
        '<a href="{{ landing_url }}">shop</a> <a href="https://menu.example.com/?a=1&amp;b=2">menu</a> '
        '<a href="https://menu.example.com/?a=1&amp;b=2">again</a> <a href="mailto:x@example.com">mail</a> '
        '<a href="{{ unsubscribe_url }}">unsub</a>'
    )
    api("POST", "/customers", "marketer", json={"customers": [
        {"external_id": "t1", "email": "t1@example.com", "segment": "champions"}]})
    created = api("POST", "/campaigns", "marketer", json=payload).json()
    assert created["links"] == ["https://menu.example.com/?a=1&amp;b=2"]
    cid = created["id"]
    api("POST", f"/campaigns/{cid}/start", "marketer")
    pid = api("POST", f"/campaigns/{cid}/periods", "marketer").json()["id"]
    assert periods.run_period(pid) == "completed"
    path = next((get_settings().outbox_dir / f"campaign-{cid}" / "period-1").glob("*.eml"))
    return cid, email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


def test_literal_links_are_tracked_and_redirect_to_the_campaigns_own_urls(api):
    cid, msg = sent_email(api)
    html = msg.get_body(("html",)).get_content()
    hrefs = re.findall(r'href="([^"]+)"', html)
    assert "https://menu.example.com" not in html  # no untracked copy of the literal link left
    assert hrefs[3] == "mailto:x@example.com"
    landing, menu, again = (h.split("/t/")[1] for h in hrefs[:3])
    assert menu == again and landing.startswith("click.") and menu.startswith("click-1.")
    r = api.client.get(f"/t/{landing}", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "https://shop.example.com/spring"
    r = api.client.get(f"/t/{menu}", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "https://menu.example.com/?a=1&b=2"
    # a redirect target can never come from the request
    assert api.client.get(f"/t/{menu}?url=https://evil.example.com", follow_redirects=False).headers[
        "location"] == "https://menu.example.com/?a=1&b=2"


def test_forged_or_foreign_tokens_record_nothing(api, queue):
    cid, msg = sent_email(api)
    token = re.search(r"/t/([\w.-]+)", msg.get_body(("html",)).get_content()).group(1)
    purpose, send_id, campaign_id, mac = token.split(".")
    assert int(campaign_id) == cid  # signed in: the redirect needs no database read
    queue.delete(QUEUE)
    for forged in (f"{purpose}.{int(send_id) + 1}.{campaign_id}.{mac}", f"{purpose}.{send_id}.{cid + 1}.{mac}",
                   f"{purpose}.{send_id}.{mac}", f"click-7.{send_id}.{campaign_id}.{mac}",
                   f"unsub.{send_id}.{campaign_id}.{mac}", f"{purpose}.{send_id}.{campaign_id}.{'0' * 32}",
                   "garbage", f"click-99.{send_id}.{campaign_id}.{mac}", f"{purpose}.{send_id}.{campaign_id}.{mac}%00",
                   f"click-01.{send_id}.{campaign_id}.{mac}", f"{purpose}.0{send_id}.{campaign_id}.{mac}"):
        assert api.client.get(f"/t/{forged}", follow_redirects=False).status_code == 404, forged
    assert queue.llen(QUEUE) == 0 and queue.xlen(clicks.STREAM) == 0  # nothing was recorded as a click
    assert api.client.get(f"/t/{token}", follow_redirects=False).status_code == 307
    assert queue.xlen(clicks.STREAM) == 1
    assert [name for name, _ in queued_tasks(queue)] == ["worker.tasks.fold_clicks"]  # one fold scheduled


def test_click_tokens_mailed_before_campaign_ids_were_signed_in_still_work(api, queue):
    cid, msg = sent_email(api)
    with session_scope() as s:
        send_id = s.execute(select(Send.id).where(Send.campaign_id == cid)).scalar_one()
    queue.delete(QUEUE)  # the period's own task
    age_sends()  # a click seconds after delivery would be judged a scanner's
    old = signing.sign("click-1", send_id)  # the token format of emails already mailed
    r = api.client.get(f"/t/{old}", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "https://menu.example.com/?a=1&b=2"
    run_worker(queue)
    with session_scope() as s:
        assert s.execute(select(Event.send_id, Event.link, Event.status)).all() == [(send_id, 1, "applied")]
        assert s.get(Send, send_id).clicks == 1


def test_one_click_unsubscribe(api):
    cid, msg = sent_email(api)
    header = str(msg["List-Unsubscribe"])
    assert "mailto:unsubscribe@" in header
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    path = re.search(r"<https?://[^/]+(/u/[\w.-]+)>", header).group(1)
    page = api.client.get(path)
    assert page.status_code == 200 and 'method="post"' in page.text
    for _ in range(2):
        assert api.client.get(path).status_code == 200
    with session_scope() as s:
        # a GET changes nothing and records nothing
        assert s.execute(select(Customer.status).where(Customer.external_id == "t1")).scalar_one() == "active"
        assert s.execute(select(Event)).first() is None
    for _ in range(2):  # works twice
        assert api.client.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    with session_scope() as s:
        assert s.execute(select(Customer.status).where(Customer.external_id == "t1")).scalar_one() == "unsubscribed"
        send = s.execute(select(Send).where(Send.campaign_id == cid)).scalar_one()
        stored = s.execute(select(Event)).scalars().all()  # one event for two POSTs, in the same transaction
        assert [(e.event_id, e.type, e.status, e.send_id, e.campaign_id, e.customer_external_id) for e in stored] == [
            (f"unsub-{send.id}", "unsubscribe", "applied", send.id, cid, "t1")]
        assert events.feedback_counts(s, cid)["by_type"]["unsubscribe"]["applied"] == 1
    assert api.client.post(path[:-2] + "00").status_code == 404
    # and the next period leaves the customer out
    pid = api("POST", f"/campaigns/{cid}/periods", "marketer").json()["id"]
    periods.run_period(pid)
    with session_scope() as s:
        assert s.execute(select(Send).where(Send.period_id == pid)).first() is None


def sent_to_many(api, n: int) -> tuple[int, dict[int, list[str]]]:
    """A campaign whose email has the landing URL and three literal links, sent to n customers:
    {send id: [token of link 0, 1, 2, 3]}."""
    payload = small_campaign_payload(segments=["champions"], holdout_share=0.0)
    payload["template"]["html"] = (
        '<a href="{{ landing_url }}">shop</a> <a href="https://a.example.com/">a</a> '
        '<a href="https://b.example.com/">b</a> <a href="https://c.example.com/">c</a> '
        '<a href="{{ unsubscribe_url }}">unsub</a>'
    )
    api("POST", "/customers", "marketer", json={"customers": [
        {"external_id": f"m{i}", "email": f"m{i}@example.com", "segment": "champions"} for i in range(n)]})
    cid = api("POST", "/campaigns", "marketer", json=payload).json()["id"]
    api("POST", f"/campaigns/{cid}/start", "marketer")
    pid = api("POST", f"/campaigns/{cid}/periods", "marketer").json()["id"]
    assert periods.run_period(pid) == "completed"
    out = {}
    for path in (get_settings().outbox_dir / f"campaign-{cid}" / "period-1").glob("*.eml"):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        html = msg.get_body(("html",)).get_content()
        out[int(path.stem)] = re.findall(r"/t/([\w.-]+)", html)
    assert len(out) == n and all(len(t) == 4 for t in out.values())
    return cid, out



def age_sends(hours: float = 1.0) -> None:
    with session_scope() as s:
        s.execute(update(Send).values(sent_at=utcnow() - timedelta(hours=hours)))


def test_a_click_carries_its_user_agent_link_and_time_to_the_worker(api, queue):
    _, tokens = sent_to_many(api, 1)
    queue.delete(QUEUE)  # the period's own task
    send_id, links = next(iter(tokens.items()))
    before = utcnow()
    r = api.client.get(f"/t/{links[2]}", headers={"User-Agent": BROWSER + "x" * 600}, follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "https://b.example.com/"
    [(_, fields)] = queue.xrange(clicks.STREAM)
    event = clicks._event(fields)
    assert event["send_id"] == send_id and event["link"] == 2 and event["type"] == "click"
    assert event["user_agent"] == (BROWSER + "x" * 600)[:512]  # truncated, never refused: the redirect works
    from datetime import datetime

    assert before <= datetime.fromisoformat(event["occurred_at"]) <= utcnow()


def test_scanner_and_bot_clicks_through_the_links_are_excluded_and_not_counted(api, queue):
    cid, tokens = sent_to_many(api, 4)
    queue.delete(QUEUE)  # the period's own task
    (s_fast, fast), (s_agent, agent), (s_burst, burst), (s_person, person) = sorted(tokens.items())

    def hit(token, ua=BROWSER):
        assert api.client.get(f"/t/{token}", headers={"User-Agent": ua}, follow_redirects=False).status_code == 307

    hit(fast[0])  # seconds after delivery: a gateway scanning the mail
    run_worker(queue)
    age_sends()  # from now on the mails were delivered an hour ago
    hit(agent[1], "Mozilla/5.0 (compatible; Proofpoint URL Defense)")
    hit(agent[0], "python-requests/2.32.3")
    for token in burst[1:]:  # links 1, 2, 3 within a second: a scanner walking the message
        hit(token)
    hit(person[0])
    hit(person[3])  # two links, one person: still rewards
    run_worker(queue)

    with session_scope() as s:
        rows = s.execute(select(Event.send_id, Event.link, Event.status, Event.reason)).all()
        by_send = {}
        for r in rows:
            by_send.setdefault(r.send_id, []).append((r.link, r.status, r.reason))
        clicks = dict(s.execute(select(Send.id, Send.clicks)).all())
        counts = events.feedback_counts(s, cid)
    assert sorted(by_send[s_fast]) == [(0, "excluded", "bot:fast")]
    assert sorted(by_send[s_agent]) == [(0, "excluded", "bot:user_agent"), (1, "excluded", "bot:user_agent")]
    assert sorted(by_send[s_burst]) == [(k, "excluded", "bot:burst") for k in (1, 2, 3)]
    assert sorted(by_send[s_person]) == [(0, "applied", None), (3, "applied", None)]
    assert clicks == {s_fast: 0, s_agent: 0, s_burst: 0, s_person: 2}
    assert counts["excluded_by_reason"] == {"bot:fast": 1, "bot:user_agent": 2, "bot:burst": 3}
    assert counts["by_type"]["click"] == {"applied": 2, "unattributed": 0, "excluded": 6}
