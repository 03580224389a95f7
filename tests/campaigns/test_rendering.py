"""Templates: refused at save time when broken or unsafe; rendered per customer when sent."""

import email
import email.policy

import pytest

from campaigns.errors import InvalidInput
from campaigns.rendering import CompiledCampaign, MessageWriter, list_id, validate_templates

OK = {"subject": "{{ tone }} for {{ customer.first_name | default('you') }}",
      "html": "<p>{{ offer }} {{ customer.note }}</p>", "text": "{{ offer }} {{ landing_url }}"}


def check(**parts):
    validate_templates({**OK, **parts}, {"tone", "offer"}, [{"tone": "t", "offer": "o"}])


def test_a_good_template_passes_even_with_arithmetic_on_customer_attributes():
    check(text="{{ customer.visits + 1 }} {{ customer.total * 2 }} {% for x in customer.items %}{{ x }}{% endfor %}")


@pytest.mark.parametrize(("part", "source", "message"), [
    ("subject", "{{ tone ", "does not compile"),
    ("html", "{{ colour }}", "undefined variable(s): colour"),
    ("html", "{{ customer.__class__.__mro__ }}", "private attribute"),
    ("html", "{{ customer['__class__'] }}", "private item"),
    ("html", "{{ customer|attr('__class__') }}", "'attr' filter"),
    ("text", "{{ offer.nope() }}", "fails to render"),
    ("html", "{{ offer|nope }}", "does not compile: No filter named 'nope'"),
    ("html", "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", "does not compile: nested too deeply"),
    ("text", "{{ offer.format(1) }}", "the 'format' method is not allowed"),
    ("text", "{% include 'other' %}", "cannot load other templates"),
    ("html", "{% macro a() %}{{ b() }}{% endmacro %}{% macro b() %}{{ c() }}{% endmacro %}"
             "{% macro c() %}{{ a() }}{% endmacro %}", "macros 'a' -> 'b' -> 'c' -> 'a' call each other in a cycle"),
])
def test_broken_or_unsafe_templates_are_refused(part, source, message):
    with pytest.raises(InvalidInput) as exc:
        check(**{part: source})
    assert exc.value.field == f"template.{part}" and message in exc.value.message


def test_macros_that_call_other_macros_without_a_cycle_are_fine():
    check(html="{% macro a(x) %}<b>{{ x }}</b>{% endmacro %}{% macro b() %}{{ a(offer) }}{{ a(tone) }}{% endmacro %}"
               "{{ b() }}{{ b() }}")


def test_render_escapes_html_but_not_text_and_strips_header_newlines():
    compiled = CompiledCampaign.compile("c", {**OK, "subject": "{{ tone }}\r\nBcc: x@evil.com"})
    subject, html, text = compiled.render({"tone": "hi", "offer": "<b>"}, {"note": "&"}, "https://l", "https://u")
    assert "\n" not in subject and subject == "hi Bcc: x@evil.com"
    assert html == "<p>&lt;b&gt; &amp;</p>" and text == "<b> https://l"


def test_message_has_both_parts_and_one_click_unsubscribe_headers():
    msg = MessageWriter("a@example.com", "example.com").build(
        to="b@example.com", subject="s", html="<p>h</p>", text="t", unsubscribe_url="https://x/u/1")
    parsed = email.message_from_bytes(msg.raw, policy=email.policy.default)
    assert msg.message_id == parsed["Message-ID"] and msg.to == "b@example.com"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["List-Unsubscribe"].strip() == "<https://x/u/1>"
    assert parsed["Message-ID"].endswith("@example.com>")
    assert parsed.get_body(("plain",)).get_content().strip() == "t"
    assert parsed.get_body(("html",)).get_content().strip() == "<p>h</p>"


def test_non_ascii_subject_sender_and_body_survive_encoding():
    msg = MessageWriter("Café Señor <news@example.com>", "example.com").build(
        to="b@example.com", subject="Olá, 20% off — ça va", html="<p>crème brûlée " + "x" * 200 + "</p>",
        text="naïve\nline two", unsubscribe_url="https://x/u/1")
    parsed = email.message_from_bytes(msg.raw, policy=email.policy.default)
    assert parsed["Subject"] == "Olá, 20% off — ça va"
    assert parsed["From"].addresses[0].display_name == "Café Señor" and msg.sender == "news@example.com"
    assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n").strip() == "naïve\nline two"
    assert parsed.get_body(("html",)).get_content().strip() == "<p>crème brûlée " + "x" * 200 + "</p>"
    assert all(len(line) <= 998 for line in msg.raw.split(b"\r\n"))


def test_render_time_cap_stops_a_runaway_render():
    import time

    from campaigns.services.sending import RenderLimitExceeded, render_limited

    with pytest.raises(RenderLimitExceeded):
        render_limited(lambda: time.sleep(2), 0.05)
    assert render_limited(lambda: "ok", 0.05) == "ok"
    time.sleep(0.1)  # the timer was disarmed: no stray alarm fires afterwards


def test_list_id_names_the_campaign_and_the_date_says_utc():
    msg = MessageWriter("a@example.com", "example.com", list_id(12, 'Spring "big" sale', "example.com")).build(
        to="b@example.com", subject="s", html="<p>h</p>", text="t", unsubscribe_url="https://x/u/1")
    parsed = email.message_from_bytes(msg.raw, policy=email.policy.default)
    assert parsed["List-Id"] == '"Spring \\"big\\" sale" <campaign-12.example.com>'
    assert parsed["Date"].endswith(" +0000")  # RFC 5322 3.3: "-0000" would mean "zone unknown"
    assert parsed["Date"].datetime.utcoffset().total_seconds() == 0
    accented = list_id(3, "Soldes d'été", "example.com")
    assert str(email.message_from_string(f"List-Id: {accented}\n\n", policy=email.policy.default)["List-Id"]) \
        == "Soldes d'été <campaign-3.example.com>"
    no_list = MessageWriter("a@example.com", "example.com").build(
        to="b@example.com", subject="s", html="h", text="t", unsubscribe_url="https://x/u/1")
    assert b"List-Id" not in no_list.raw
