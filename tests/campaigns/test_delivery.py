"""The delivery hot path: the per-chunk message writer (checked against what the standard library's
`EmailMessage` builds), one render context for the three template parts, the outbox backend, the
set-based result UPDATE, and the ledger's room for heap-only updates on PostgreSQL."""

import email
import email.policy
import os
import random
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formataddr, parseaddr

import pytest
from sqlalchemy import select, text

from campaigns.db import is_postgres, session_scope
from campaigns.delivery import OutboxBackend
from campaigns.models import PeriodStatus, Send, SendStatus
from campaigns.rendering import ENVIRONMENTS, CompiledCampaign, MessageWriter, _encoded_words
from campaigns.repositories import sends as send_repo
from campaigns.sandbox import TemplateLimitError, TemplateSet, _new_context
from campaigns.services import periods
from tests.campaigns.test_periods import new_period, outbox_files, setup_campaign

LONG_LINE = "word " * 300 + "x" * 1200  # a 2,700-character line with no break in it
TRICKY = [
    # (sender, subject, text, html)
    ("news@example.com", "Plain subject", "plain\nbody\n", "<p>plain</p>"),
    ("Café Señor <news@example.com>", "Olá, 20% off — ça va", "naïve\r\nline two\r\n", "<p>crème brûlée</p>"),
    ("Ünïcödé Sender Name With Many Words <a@example.com>",
     "€" * 40 + " 🍕🍔🍟 " + "ß" * 33 + " done",  # multi-byte characters across every 42-byte cut
     "mixed\rcr\nlf\r\ncrlf", '<a href="https://x.example/?a=1&b=2">=_ =3D =\n</a>'),
    ("x@example.com", "A subject that is plain ASCII but rather long " * 3, LONG_LINE, "<p>" + LONG_LINE + "</p>"),
    ("x@example.com", "tab\tand trailing space ", "trailing spaces   \n\ttab line\t\n.\nFrom here\n",
     "<pre>  \n</pre>"),
]


def reference(sender, to, subject, text_body, html_body, unsubscribe, message_id) -> EmailMessage:
    """The same email as the standard library builds it (what the worker did before it wrote
    messages directly)."""
    msg = EmailMessage()
    name, addr = parseaddr(sender)
    msg["From"] = formataddr((name, addr)) if name else addr
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    msg["List-Unsubscribe"] = unsubscribe
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(text_body, cte="quoted-printable")
    msg.add_alternative(html_body, subtype="html", cte="quoted-printable")
    return email.message_from_bytes(msg.as_bytes(policy=email.policy.SMTP), policy=email.policy.default)


def summary(parsed) -> dict:
    """What a receiving client sees: header values decoded, the parts and their decoded text (line
    ends normalised: the message carries CRLF, `EmailMessage` keeps the input's)."""
    sender = parsed["From"].addresses[0]
    parts = [p for p in parsed.walk() if not p.is_multipart()]
    return {
        "from": (sender.display_name, sender.addr_spec),
        **{h: str(parsed[h]) for h in ("To", "Subject", "Message-ID", "List-Unsubscribe-Post")},
        "unsubscribe": str(parsed["List-Unsubscribe"]).strip(),
        "type": parsed.get_content_type(),
        "parts": [(p.get_content_type(), p.get_content_charset(),
                   p.get_content().replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")) for p in parts],
    }


@pytest.mark.parametrize(("sender", "subject", "text_body", "html_body"), TRICKY)
def test_written_message_parses_like_the_standard_librarys(sender, subject, text_body, html_body):
    writer = MessageWriter(sender, "example.com")
    mailto = "unsubscribe@example.com?subject=unsub.7.abc"
    msg = writer.build(to="bob@example.com", subject=subject, html=html_body, text=text_body,
                       unsubscribe_url="https://x.example/u/unsub.7.abc", unsubscribe_mailto=mailto,
                       message_id="<send-7.42@example.com>")
    ours = email.message_from_bytes(msg.raw, policy=email.policy.default)
    theirs = reference(sender, "bob@example.com", subject, text_body, html_body,
                       f"<https://x.example/u/unsub.7.abc>, <mailto:{mailto}>", "<send-7.42@example.com>")
    assert summary(ours) == summary(theirs)
    assert summary(ours)["type"] == "multipart/alternative"
    assert [t for t, _, _ in summary(ours)["parts"]] == ["text/plain", "text/html"]
    assert ours.defects == [] and all(not p.defects for p in ours.walk())
    lines = msg.raw.split(b"\r\n")
    assert all(len(line) <= 998 for line in lines)
    assert b"\n" not in msg.raw.replace(b"\r\n", b"") and b"\r" not in msg.raw.replace(b"\r\n", b"")
    head = msg.raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert all(len(line) <= 160 for line in head)  # headers folded (the long ones are URLs)
    assert msg.sender == parseaddr(sender)[1] and msg.to == "bob@example.com"
    # ASCII with lines of at most 998 characters goes as is (7bit); anything else quoted-printable
    parts = [p for p in ours.walk() if not p.is_multipart()]
    for part, body in zip(parts, (text_body, html_body), strict=True):
        plain = body.isascii() and max(map(len, body.replace("\r\n", "\n").replace("\r", "\n").split("\n"))) <= 998
        assert part["Content-Transfer-Encoding"] == ("7bit" if plain else "quoted-printable")


def test_one_writer_serves_many_messages_and_a_body_cannot_fake_its_boundary():
    writer = MessageWriter("news@example.com", "example.com")
    boundary = writer._end.decode().strip().strip("-")
    evil = f"before\n--{boundary}\nContent-Type: text/html\n\n<script>x</script>\n--{boundary}--\nafter"
    raws = [writer.build(to=f"c{i}@example.com", subject=f"s{i}", html=f"<p>{i}</p>", text=evil if i else "t",
                         unsubscribe_url=f"https://x/u/{i}", message_id=f"<send-{i}.1@example.com>").raw
            for i in range(3)]
    for i, raw in enumerate(raws):
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        parts = [p for p in parsed.walk() if not p.is_multipart()]
        assert len(parts) == 2 and parsed["To"] == f"c{i}@example.com"
        assert parsed["Message-ID"] == f"<send-{i}.1@example.com>"
        body = parts[0].get_content().replace("\r\n", "\n").rstrip("\n")
        assert body == (evil if i else "t")
        # plain ASCII, but it holds the boundary: encoded, so the boundary cannot appear in it
        assert parts[0]["Content-Transfer-Encoding"] == ("quoted-printable" if i else "7bit")
    assert len({raw.split(b"\r\n\r\n", 1)[0].split(b"Date: ")[1][:10] for raw in raws}) <= 2


def test_encoded_words_round_trip_any_text():
    rng = random.Random(7)
    alphabet = "aZ 09,;:?=_\"'()<>@.é€ßçñ中文字🍕🍔\u200b\u00a0"
    for _ in range(300):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 120)))
        folded = _encoded_words(value)
        assert all(len(line) <= 77 for line in folded.split("\r\n"))
        parsed = email.message_from_bytes(f"Subject: {folded}\r\n\r\n".encode(), policy=email.policy.default)
        assert str(parsed["Subject"]) == value


# --- one render context for the three parts


def test_fast_context_has_exactly_what_jinja_would_give_it():
    """`_new_context` copies what `Context.__init__` sets; if a Jinja2 upgrade adds an attribute,
    this fails instead of a render going wrong."""
    template = ENVIRONMENTS["html"].from_string("<p>{{ a }}</p>")
    theirs = template.new_context({"a": 1})
    ours = _new_context(template.environment, {**template.globals, "a": 1}, template.name, template.blocks,
                        frozenset(template.globals))
    assert set(vars(ours)) == set(vars(theirs)) - {"budget"}
    for name in ("parent", "vars", "exported_vars", "name", "globals_keys", "blocks"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert vars(ours.eval_ctx) == vars(theirs.eval_ctx)


def test_the_parts_share_variables_but_nothing_a_template_can_change():
    compiled = CompiledCampaign.compile("c", {
        "subject": "{% set tone = 'changed' %}{{ tone }} {{ customer.name }}",
        "html": "<p>{{ tone }} {{ customer.name }} {{ range(3)|list|length }}</p>",
        "text": "{{ tone }} {% for x in customer['items'] %}{{ x }}{% endfor %}",
    })
    customer = {"name": "<Ann>", "items": [1, 2]}
    params = {"tone": "warm"}
    for _ in range(2):  # a second render sees the same inputs, untouched
        subject, html, text_part = compiled.render(params, customer, "https://l", "https://u")
        assert subject == "changed <Ann>"
        assert html == "<p>warm &lt;Ann&gt; 3</p>"  # autoescape per part, the subject's `set` did not leak
        assert text_part == "warm 12"
    assert params == {"tone": "warm"} and customer == {"name": "<Ann>", "items": [1, 2]}


def test_each_part_has_its_own_budget_and_the_limits_still_hold():
    env = ENVIRONMENTS["text"]
    heavy = "{% for i in range(9000) %}{{ i }}{% endfor %}"  # 18,000 steps: fine alone
    parts = TemplateSet([env.from_string(heavy), env.from_string(heavy), env.from_string(heavy)])
    assert [len(out) for out in parts.render({})] == [len("".join(map(str, range(9000))))] * 3
    bomb = TemplateSet([env.from_string("ok"), env.from_string("{{ 'x' * 10 ** 7 }}")])
    with pytest.raises(TemplateLimitError, match="repetition"):
        bomb.render({})
    slow = TemplateSet([env.from_string("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}"
                                        "{% endfor %}")])
    with pytest.raises(TemplateLimitError):
        slow.render({})


# --- outbox


def test_outbox_rewrites_the_same_file_atomically_and_leaves_no_temporary(tmp_path):
    writer = MessageWriter("news@example.com", "example.com")
    backend = OutboxBackend(tmp_path / "campaign-1" / "period-1")
    first = writer.build(to="a@example.com", subject="one", html="<p>1</p>", text="1", unsubscribe_url="https://u")
    again = writer.build(to="a@example.com", subject="two", html="<p>2</p>", text="2", unsubscribe_url="https://u")
    backend.deliver(41, first)
    backend.deliver(42, first)
    backend.deliver(41, again)  # a redelivery after a crash: the same name, the new content
    backend.close()
    backend.close()  # idempotent
    folder = tmp_path / "campaign-1" / "period-1"
    assert sorted(os.listdir(folder)) == ["41.eml", "42.eml"]
    assert (folder / "41.eml").read_bytes() == again.raw and (folder / "42.eml").read_bytes() == first.raw
    with pytest.raises(RuntimeError):
        backend.deliver(43, first)


# --- the ledger


def plan(cid: int, pid: int) -> None:
    """Claim the period's customers (committed), without delivering."""
    periods.coordinate(pid, enqueue=lambda chunk_ids: None)


def test_results_move_only_queued_rows_and_carry_time_and_message_id(database_url, redis_server):
    cid = setup_campaign(40)
    pid = new_period(cid)
    plan(cid, pid)
    with session_scope() as s:
        ids = [r.id for r in s.execute(select(Send.id).where(Send.period_id == pid).order_by(Send.id))]
    at = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC).timestamp()
    sent = [{"sid": i, "new_status": SendStatus.SENT, "mid": f"<send-{i}.9@example.com>", "at": at, "err": None}
            for i in ids[:30]]
    failed = [{"sid": i, "new_status": SendStatus.FAILED, "mid": None, "at": None, "err": "render failed: x"}
              for i in ids[30:]]
    with session_scope() as s:
        send_repo.record_results(s, sent + failed)
    with session_scope() as s:  # a redelivered batch changes nothing: only queued rows move
        send_repo.record_results(s, [{**r, "mid": "<other@x>", "at": at + 60} for r in sent])
    with session_scope() as s:
        rows = {r.id: r for r in s.execute(select(Send).where(Send.period_id == pid)).scalars()}
    for i in ids[:30]:
        assert rows[i].status == "sent" and rows[i].message_id == f"<send-{i}.9@example.com>"
        sent_at = rows[i].sent_at if rows[i].sent_at.tzinfo else rows[i].sent_at.replace(tzinfo=UTC)
        assert abs((sent_at - datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)).total_seconds()) < 1e-3
    for i in ids[30:]:
        assert rows[i].status == "failed" and rows[i].error == "render failed: x" and rows[i].message_id is None


def test_delivered_rows_stay_on_their_page_on_postgresql(database_url, redis_server):
    """fillfactor 35 (migration 0010): delivery's UPDATE finds room on the row's own page, so it is a
    heap-only update (no index entries, no second copy of the row elsewhere)."""
    cid = setup_campaign(600)
    pid = new_period(cid)
    plan(cid, pid)
    with session_scope() as s:
        if not is_postgres(s):
            pytest.skip("PostgreSQL storage parameter")
        options = s.execute(text("SELECT reloptions FROM pg_class WHERE relname = 'send'")).scalar_one()
        assert "fillfactor=35" in options
    page = "SELECT id, (ctid::text::point)[0] FROM send WHERE period_id = :p"
    with session_scope() as s:
        before = dict(s.execute(text(page), {"p": pid}).all())
    assert periods.run_period(pid) == PeriodStatus.COMPLETED
    with session_scope() as s:
        after = dict(s.execute(text(page), {"p": pid}).all())
        statuses = set(s.execute(select(Send.status).where(Send.period_id == pid)).scalars())
    assert statuses == {"sent"} and len(before) == 600
    assert after == before  # every delivered row is on the page its claimed version was on
    assert len(outbox_files(cid, 1)) == 600
