"""Links inside sent emails: every literal link is rewritten to a signed tracking link that records a
click and redirects to the campaign's own URL; forged tokens record nothing; unsubscribe is RFC 8058."""

import email
import email.policy
import re

from campaigns.db import session_scope
from campaigns.models import Customer, Send
from campaigns.services import periods
from campaigns.settings import get_settings
from tests.factories import small_campaign_payload


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


def test_forged_or_foreign_tokens_record_nothing(api, redis_server):
    import redis

    cid, msg = sent_email(api)
    token = re.search(r"/t/([\w.-]+)", msg.get_body(("html",)).get_content()).group(1)
    purpose, send_id, mac = token.split(".")
    queue = redis.Redis.from_url(redis_server.url)
    queue.delete("mab")
    for forged in (f"{purpose}.{int(send_id) + 1}.{mac}", f"click-7.{send_id}.{mac}", f"unsub.{send_id}.{mac}",
                   f"{purpose}.{send_id}.{'0' * 32}", "garbage", f"click-99.{send_id}.{mac}"):
        assert api.client.get(f"/t/{forged}", follow_redirects=False).status_code == 404, forged
    assert queue.llen("mab") == 0  # nothing was queued as a click
    assert api.client.get(f"/t/{token}", follow_redirects=False).status_code == 307
    assert queue.llen("mab") == 1


def test_one_click_unsubscribe(api):
    cid, msg = sent_email(api)
    header = str(msg["List-Unsubscribe"])
    assert "mailto:unsubscribe@" in header
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    path = re.search(r"<https?://[^/]+(/u/[\w.-]+)>", header).group(1)
    page = api.client.get(path)
    assert page.status_code == 200 and 'method="post"' in page.text
    with session_scope() as s:
        assert s.query(Customer).filter_by(external_id="t1").one().status == "active"  # a GET changes nothing
    for _ in range(2):  # works twice
        assert api.client.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    with session_scope() as s:
        assert s.query(Customer).filter_by(external_id="t1").one().status == "unsubscribed"
    assert api.client.post(path[:-2] + "00").status_code == 404
    # and the next period leaves the customer out
    pid = api("POST", f"/campaigns/{cid}/periods", "marketer").json()["id"]
    periods.run_period(pid)
    with session_scope() as s:
        assert s.query(Send).filter_by(period_id=pid).count() == 0
