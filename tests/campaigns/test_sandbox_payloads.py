"""Known Jinja2 sandbox escapes and resource bombs, each tried for real on both paths:

- save time: `POST /campaigns` with the payload in a template must answer 422 naming the template
  part, and write nothing;
- render time: the same payload compiled as if it had been stored before these checks existed (or
  by a future bug in them) and rendered the way a worker renders it (`CompiledCampaign.render` under
  `render_limited`) must raise a clear error from the sandbox itself — never the SIGALRM backstop,
  which cannot interrupt one long C call — and a period must record each such send as failed with
  "render failed: …" while the other customers get their email.

The advisories behind the payloads (Jinja2 >= 3.1.6 carries the upstream fixes; the bounded sandbox
also refuses each whole family): CVE-2024-22195 and CVE-2024-34064 (`|xmlattr` keys that inject
attributes), CVE-2024-56201 (code execution through a crafted template *name* used by
`{% import %}`/`{% include %}` messages: our templates have no name and may not load others),
CVE-2024-56326 (a stored reference to `str.format`), CVE-2025-27516 (`|attr('format')`).
"""

import threading

import pytest
from jinja2.exceptions import SecurityError
from sqlalchemy import func, select, update

from campaigns import rendering
from campaigns.db import session_scope
from campaigns.models import Campaign, Customer, PeriodStatus, Send
from campaigns.rendering import CompiledCampaign, validate_templates
from campaigns.sandbox import BoundedSandbox, Limits, TemplateLimitError, render
from campaigns.schemas import CampaignCreate, CustomerIn
from campaigns.services import campaigns, customers, periods
from campaigns.services.sending import RenderLimitExceeded, render_limited
from campaigns.settings import get_settings
from tests.api.conftest import api  # noqa: F401 (the real-HTTP fixture of tests/api)
from tests.factories import small_campaign_payload

# (id, template source, part, fragment of the 422 message, fragment of the render-time error)
PAYLOADS = [
    # --- attribute and class-hierarchy escapes ------------------------------------------------------
    ("mro-subclasses", "{{ ''.__class__.__mro__[1].__subclasses__() }}", "html", "private attribute", "unsafe"),
    ("cycler-globals", "{{ cycler.__init__.__globals__ }}", "html", "private attribute '__globals__'", "unsafe"),
    ("joiner-init", "{{ joiner.__init__ }}", "text", "private attribute '__init__'", "unsafe"),
    ("namespace-globals", "{{ namespace.__init__.__globals__['os'] }}", "html", "private attribute", "unsafe"),
    ("template-reference-context", "{{ self._TemplateReference__context }}", "subject", "private attribute",
     "unsafe"),
    ("self", "{{ self.__dict__ }}", "html", "private attribute '__dict__'", "unsafe"),
    ("config", "{{ config.items() }}", "html", "undefined variable(s): config", "'config' is undefined"),
    ("request-attr", "{{ request|attr('application') }}", "html", "'attr' filter is not allowed",
     "'attr' filter is not allowed"),
    ("attr-dunder", "{{ tone|attr('__class__') }}", "html", "'attr' filter is not allowed", "'attr' filter"),
    ("attr-concat", "{{ tone|attr('_' ~ '_class__') }}", "html", "'attr' filter is not allowed", "'attr' filter"),
    ("attr-built-by-format", "{{ tone|attr('%c%cclass%c%c'|format(95, 95, 95, 95)) }}", "text",
     "'attr' filter is not allowed", "'attr' filter"),
    ("attr-built-by-join", "{{ tone|attr(['_', '_cla', 'ss__']|join) }}", "html", "'attr' filter",
     "'attr' filter"),
    ("item-concat", "{{ tone['_' ~ '_class__'] }}", "html", "access to attribute '__class__' of 'str' object is "
     "unsafe", "unsafe"),
    ("item-built-by-format", "{{ tone['%c%cclass%c%c'|format(95, 95, 95, 95)]['__base__'] }}", "html",
     "private item '__base__'", "unsafe"),
    ("item-built-by-format-only", "{{ tone['%c%cclass%c%c'|format(95, 95, 95, 95)] }}", "html",
     "access to attribute '__class__' of 'str' object is unsafe", "unsafe"),
    ("map-attribute", "{{ [tone]|map(attribute='__class__')|list }}", "html",
     "private attribute '__class__' is not allowed (in the 'map' filter)", "unsafe"),
    ("map-attribute-built", "{{ [tone]|map(attribute='_' ~ '_class__')|list }}", "html", "unsafe", "unsafe"),
    ("selectattr", "{{ [tone]|selectattr('__class__')|list }}", "html", "private attribute '__class__'",
     "unsafe"),
    ("namespace-private-set", "{% set ns = namespace() %}{% set ns.__class__ = 1 %}{{ ns.__class__ }}", "html",
     "private attribute '__class__'", "unsafe"),
    # --- format-string escapes ------------------------------------------------------------------------
    ("str-format", "{{ '{0.__class__.__mro__}'.format(tone) }}", "html", "the 'format' method is not allowed",
     "unsafe"),
    ("str-format-map", "{{ '{x.__class__}'.format_map({'x': tone}) }}", "html", "'format_map' method", "unsafe"),
    ("format-via-item", "{{ '{0.__class__}'['format'](tone) }}", "html", "the 'format' method", "unsafe"),
    ("format-via-built-item", "{{ '{0.__class__}'['for' ~ 'mat'](tone) }}", "text",
     "access to attribute 'format' of 'str' object is unsafe", "unsafe"),
    ("format-filter-with-braces", "{{ '{0.__class__}'|format(tone) }}", "html",
     "not all arguments converted", "not all arguments converted"),
    ("format-filter-dunder", "{{ '%s'|format(tone.__class__) }}", "html", "private attribute '__class__'",
     "unsafe"),
    # --- the 2024–2025 advisories ---------------------------------------------------------------------
    ("CVE-2024-56326-stored-format", "{% set f = '{0.__class__.__init__.__globals__}'.format %}{{ f(tone) }}",
     "html", "the 'format' method", "unsafe"),
    ("CVE-2024-56326-stored-built", "{% set f = 'x'['for' ~ 'mat'] %}{{ f(tone) }}", "html",
     "access to attribute 'format' of 'str' object is unsafe", "unsafe"),
    ("CVE-2025-27516-attr-format", "{{ '{0.__class__.__init__.__globals__}'|attr('format')(tone) }}", "html",
     "'attr' filter is not allowed", "'attr' filter is not allowed"),
    ("CVE-2024-22195-xmlattr-space", "<p {{ {'onmouseover=alert(1) x': 'y'}|xmlattr }}>hi</p>", "html",
     "Invalid character in attribute name", "Invalid character in attribute name"),
    ("CVE-2024-34064-xmlattr-slash", "<p {{ {'x/onload=alert(1)': 'y'}|xmlattr }}>hi</p>", "html",
     "Invalid character in attribute name", "Invalid character in attribute name"),
    ("CVE-2024-56201-import", "{% from 'evil{{7*7}}' import x %}{{ x }}", "html",
     "cannot load other templates", "no loader"),
    ("include", "{% include 'x' %}", "text", "cannot load other templates", "no loader"),
    # --- things that are not there --------------------------------------------------------------------
    ("lipsum", "{{ lipsum(10**6) }}", "html", "undefined variable(s): lipsum", "'lipsum' is undefined"),
    ("to-bytes", "{{ (1).to_bytes(10**9, 'big') }}", "html", "access to attribute 'to_bytes'", "unsafe"),
    ("expandtabs", "{{ ('a' ~ '\t' ~ 'b').expandtabs(10**9) }}", "html", "'expandtabs' of 'str' object is unsafe",
     "unsafe"),
    ("translate", "{{ tone.translate({116: 'x' * 1000}) }}", "html", "'translate' of 'str' object is unsafe",
     "unsafe"),
    ("list-mutation", "{% set l = [] %}{% for i in range(10) %}{{ l.append(l) }}{% endfor %}", "html",
     "'append' of 'list' object is unsafe", "unsafe"),
    # --- resources: size -------------------------------------------------------------------------------
    ("huge-range-loop", "{% for i in range(10**9) %}{{ i }}{% endfor %}", "html", "range() of 1,000,000,000",
     "range() of"),
    ("huge-range-list", "{{ range(10**10)|list }}", "html", "range() of 10,000,000,000 numbers", "range() of"),
    ("string-repetition", "{{ 'x' * 10**9 }}", "subject", "the repetition would be about 1,000,000,000",
     "repetition"),
    ("list-repetition", "{{ ([tone] * 10**8)|length }}", "html", "the repetition", "repetition"),
    ("power", "{{ 10 ** (10 ** 10) }}", "html", "digits", "digits"),
    ("power-of-power", "{{ 9 ** (9 ** 9) }}", "html", "digits", "digits"),
    ("squaring-loop", "{% set ns = namespace(x=3) %}{% for i in range(64) %}{% set ns.x = ns.x * ns.x %}"
     "{% endfor %}{{ ns.x }}", "html", "digits", "digits"),
    ("concat-doubling", "{% set ns = namespace(s='xy') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
     "{% endfor %}{{ ns.s|length }}", "html", "the ~ concatenation", "concatenation"),
    ("plus-doubling", "{% set ns = namespace(s=['x']) %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
     "{% endfor %}{{ ns.s|length }}", "html", "the sum would be", "the sum"),
    ("center", "{{ tone|center(10**9) }}", "html", "padded string", "padded string"),
    ("ljust", "{{ tone.ljust(10**9) }}", "html", "str.ljust()", "str.ljust()"),
    ("printf-width", "{{ '%999999999s' % tone }}", "html", "the formatted string", "formatted string"),
    ("printf-precision", "{{ '%.999999999f' % 1.5 }}", "html", "the formatted string", "formatted string"),
    ("format-filter-width", "{{ '%0999999999d'|format(1) }}", "html", "the formatted string", "formatted string"),
    ("printf-star", "{{ '%*s' % (10**9, tone) }}", "html", "'*' widths", "'*' widths"),
    ("replace-growth", "{{ ('x' * 1000)|replace('', 'y' * 1000) }}", "html", "the replaced string",
     "replaced string"),
    ("str-replace-growth", "{{ ('x' * 1000).replace('', 'y' * 1000) }}", "html", "str.replace()",
     "str.replace()"),
    ("join-of-shared-refs", "{% set s = 'x' * 900000 %}{{ [s, s, s]|join }}", "html",
     "the input of the 'join' filter", "'join' filter"),
    ("str-join-of-shared-refs", "{% set s = 'x' * 900000 %}{{ ''.join([s, s]) }}", "html",
     "the arguments of the call", "arguments of the call"),
    ("print-shared-refs", "{% set s = 'x' * 900000 %}{{ [s, s] }}", "html", "output exceeds", "output exceeds"),
    ("batch-fill", "{{ [1]|batch(10**9, 'x')|list }}", "html", "linecount=1000000000", "linecount"),
    ("slice-count", "{{ [1]|slice(10**9)|list }}", "html", "slices=1000000000", "slices"),
    ("wordwrap", "{{ ('x' * 1000)|wordwrap(1, wrapstring='y' * 1000) }}", "html", "the wrapped string",
     "wrapped string"),
    ("indent", "{{ ('x\n' * 1000)|indent(10000) }}", "html", "the indented string", "indented string"),
    ("sum-of-lists", "{{ ([[1]] * 1000)|sum(start=[]) }}", "html", "sum() may only add numbers",
     "may only add numbers"),
    # --- resources: time and output -------------------------------------------------------------------
    ("nested-loops", "{% for i in range(10000) %}{% for j in range(10000) %}{{ tone }}{% endfor %}{% endfor %}",
     "html", "more than 100,000 steps", "steps"),
    ("giant-output", "{% for i in range(10000) %}{{ 'y' * 100000 }}{% endfor %}", "text",
     "output exceeds 1,000,000 characters", "output exceeds"),
    ("giant-literal-output", "{% for i in range(10000) %}" + "z" * 1000 + "{% endfor %}", "html",
     "output exceeds 1,000,000 characters", "output exceeds"),
    ("recursive-macro", "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "html",
     "macro 'm' calls itself", "nested deeper than 20"),
    ("mutual-recursion", "{% macro a() %}{{ b() }}{% endmacro %}{% macro b() %}{{ a() }}{% endmacro %}{{ a() }}",
     "html", "macros 'a' -> 'b' -> 'a' call each other", "nested deeper than 20"),
    ("macro-handed-itself", "{% macro m(f) %}{{ f(f) }}{% endmacro %}{{ m(m) }}", "html",
     "nested deeper than 20", "nested deeper than 20"),
    ("exponential-macro", "{% macro m(f, n) %}{% if n %}{{ f(f, n - 1) }}{{ f(f, n - 1) }}{% endif %}"
     "{% endmacro %}{{ m(m, 19) }}", "html", "more than 100,000 steps", "steps"),
    ("recursive-loop", "{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}", "html",
     "recursive loops are not allowed", "nested deeper than 20"),
    ("caller-recursion", "{% macro m() %}{{ caller() }}{% endmacro %}"
     "{% macro n(f) %}{% call m() %}{{ f(f) }}{% endcall %}{% endmacro %}{{ n(n) }}", "html",
     "nested deeper than 20", "nested deeper than 20"),
]
IDS = [p[0] for p in PAYLOADS]


def campaign_count() -> int:
    with session_scope() as s:
        return s.execute(select(func.count()).select_from(Campaign)).scalar_one()


def with_payload(part: str, source: str) -> dict:
    payload = small_campaign_payload()
    payload["template"] = {**payload["template"], part: source}
    return payload


@pytest.mark.parametrize(("name", "source", "part", "saved", "rendered"), PAYLOADS, ids=IDS)
def test_payload_is_refused_when_saved(api, name, source, part, saved, rendered):  # noqa: F811
    before = campaign_count()
    r = api("POST", "/campaigns", "marketer", json=with_payload(part, source))
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "invalid_input"
    [detail] = body["detail"]
    assert detail["loc"] == f"template.{part}"
    assert saved in detail["msg"], detail["msg"]
    assert campaign_count() == before


@pytest.fixture
def slow_clock(monkeypatch):
    """Each payload has its own guard (steps, output, range, repetition…): the time limit is raised
    so that a loaded machine never lets the clock stop a payload before the guard that names it."""
    monkeypatch.setenv("MAB_RENDER_TIMEOUT_SECONDS", "30")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.mark.parametrize(("name", "source", "part", "saved", "rendered"), PAYLOADS, ids=IDS)
def test_payload_is_stopped_when_rendered(name, source, part, saved, rendered, slow_clock):
    """As a worker would render it, had it been stored: the sandbox stops it, not the alarm."""
    templates = {**small_campaign_payload()["template"], part: source}
    params = {"tone": "friendly", "offer": "free_dessert"}
    customer = {"external_id": "c1", "email": "c1@example.com", "first_name": "Ann"}
    with pytest.raises(Exception) as exc:  # noqa: B017 (which exception is checked below)
        compiled = CompiledCampaign.compile("c", templates)
        render_limited(lambda: compiled.render(params, customer, "https://l", "https://u"),
                       get_settings().render_timeout_seconds)
    assert not isinstance(exc.value, RenderLimitExceeded), "the SIGALRM backstop had to stop it"
    assert rendered in str(exc.value), f"{type(exc.value).__name__}: {exc.value}"


# Bombs that only go off with a particular customer's data: they pass the save-time trial render
# (which uses a stand-in for customer data) and must fail for that customer alone.
DATA_BOMBS = {
    "range": ("{{ range(customer.n|int)|list|length }}", 10**9, "TemplateLimitError: range() of 1,000,000,000"),
    "repeat": ("{{ customer.s * (customer.n|int) }}", 10**9, "TemplateLimitError: the repetition would be about"),
    "power": ("{{ 10 ** (customer.n|int) }}", 10**10, "TemplateLimitError: 10 ** 10000000000 would have about"),
    "loops": ("{% for i in range(customer.n|int) %}{% for j in range(customer.n|int) %}{{ i }}{% endfor %}"
              "{% endfor %}", 10_000, "TemplateLimitError: the template ran more than 100,000 steps"),
    "output": ("{% for i in range(customer.n|int) %}{{ customer.s * 100000 }}{% endfor %}", 1_000,
               "TemplateLimitError: the template's output exceeds 1,000,000 characters"),
    "center": ("{{ customer.s|center(customer.n|int) }}", 10**9, "TemplateLimitError: the padded string"),
    "escape": ("{{ customer.s[customer.key] }}", 0, "access to attribute '__class__' of 'str' object is unsafe"),
    "format": ("{{ customer.s[customer.method](customer) }}", 0, "access to attribute 'format' of 'str' object"),
    "xmlattr": ("<p {{ {customer.key: 'x'}|xmlattr }}>", 0, "ValueError: Invalid character in attribute name"),
}


def _bomb_template() -> str:
    branches = "".join(f"{{% {'if' if i == 0 else 'elif'} customer.kind == '{kind}' %}}{source}"
                       for i, (kind, (source, _, _)) in enumerate(DATA_BOMBS.items()))
    return f'<p>{{{{ offer }}}}</p>{branches}{{% endif %}}<a href="{{{{ unsubscribe_url }}}}">u</a>'


def test_a_customer_whose_data_sets_off_a_bomb_fails_alone_with_the_reason(database_url, redis_server):
    payload = small_campaign_payload()
    payload["template"]["html"] = _bomb_template()
    keys = {"escape": "__class__", "xmlattr": "onclick=alert(1) x"}
    with session_scope() as s:
        rows = [CustomerIn(external_id=f"ok{i}", email=f"ok{i}@example.com", segment="champions",
                           attributes={"kind": "none", "s": "x", "n": 1}) for i in range(5)]
        rows += [CustomerIn(external_id=kind, email=f"{kind}@example.com", segment="champions",
                            attributes={"kind": kind, "s": "x", "n": n, "key": keys.get(kind, "k"),
                                        "method": "format"})
                 for kind, (_, n, _) in DATA_BOMBS.items()]
        customers.import_customers(s, customers.json_rows(rows))
        cid = campaigns.create(s, CampaignCreate(**payload)).id  # the save-time checks let it through
        campaigns.transition(s, cid, "start")
    with session_scope() as s:
        pid = periods.start_period(s, cid).id
    assert periods.run_period(pid) == PeriodStatus.COMPLETED
    outcome = _outcomes_by_external_id(pid)
    assert len(outcome) == 5 + len(DATA_BOMBS)
    for kind, (_, _, reason) in DATA_BOMBS.items():
        status, error = outcome[kind]
        assert status == "failed" and error.startswith("render failed: ") and reason in error, (kind, error)
    assert all(outcome[f"ok{i}"] == ("sent", None) for i in range(5)), outcome


def _outcomes_by_external_id(period_id: int) -> dict[str, tuple[str, str | None]]:
    with session_scope() as s:
        rows = s.execute(select(Customer.external_id, Send.status, Send.error)
                         .join(Customer, Customer.id == Send.customer_id).where(Send.period_id == period_id))
        return {external_id: (status, error) for external_id, status, error in rows}


@pytest.mark.parametrize("source", [
    "{{ '{0.__class__.__init__.__globals__}'|attr('format')(tone) }}",
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
    "{{ 'x' * 10**9 }}",
], ids=["CVE-2025-27516", "recursive-macro", "string-repetition"])
def test_a_stored_payload_fails_every_send_and_the_period_completes(sqlite_url, redis_server, source):
    """A template that got into the database before these checks existed: every send fails with the
    reason, the worker carries on and the period completes."""
    with session_scope() as s:
        rows = [CustomerIn(external_id=f"c{i}", email=f"c{i}@example.com", segment="champions")
                for i in range(4)]
        customers.import_customers(s, customers.json_rows(rows))
        cid = campaigns.create(s, CampaignCreate(**small_campaign_payload())).id
        s.execute(update(Campaign).where(Campaign.id == cid).values(html_template=source))
        campaigns.transition(s, cid, "start")
    with session_scope() as s:
        pid = periods.start_period(s, cid).id
    assert periods.run_period(pid) == PeriodStatus.COMPLETED
    outcome = _outcomes_by_external_id(pid)
    assert len(outcome) == 4
    assert all(status == "failed" and error.startswith("render failed: ") for status, error in outcome.values())
    assert all(("SecurityError" in e or "TemplateLimitError" in e) for _, e in outcome.values()), outcome


def test_the_time_limit_holds_outside_the_main_thread():
    """The API trial-renders in a thread pool where SIGALRM cannot reach: the sandbox's own clock
    stops a long render there."""
    env = BoundedSandbox(limits=Limits(steps=10**12, seconds=0.05))
    template = env.from_string("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}")
    errors = []

    def run():
        try:
            render(template, {})
        except TemplateLimitError as exc:
            errors.append(str(exc))

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert errors == ["the template ran longer than 0.05 s"]


def test_save_time_trial_renders_share_one_time_budget(monkeypatch):
    """Each variant's trial render is bounded, and so is their sum: a template that is merely slow,
    rendered for many variants, is refused rather than holding an API worker."""
    monkeypatch.setattr(rendering, "TRIAL_RENDER_SECONDS", 0.2)
    slow = "{% for i in range(1000) %}{% for j in range(40) %}{% endfor %}{% endfor %}{{ tone }}"
    templates = {"subject": "s", "html": slow, "text": "t"}
    variants = [{"tone": f"t{i}"} for i in range(2000)]
    with pytest.raises(Exception) as exc:  # noqa: B017
        validate_templates(templates, {"tone"}, variants)
    assert exc.value.field == "template.html"
    assert "trial rendering of the 2000 variants takes longer than 0.2 s" in exc.value.message
    validate_templates(templates, {"tone"}, variants[:2])  # a couple of variants are fine


def test_the_installed_jinja2_carries_the_2024_2025_sandbox_fixes():
    from importlib.metadata import version

    major, minor, patch = (int(x) for x in version("jinja2").split(".")[:3])
    assert (major, minor, patch) >= (3, 1, 6)  # CVE-2024-56201, CVE-2024-56326 (3.1.5), CVE-2025-27516 (3.1.6)
    assert (major, minor) < (3, 2)  # campaigns/sandbox.py extends 3.1's code generator; re-check on upgrade


def test_limit_errors_are_security_errors_so_every_caller_treats_them_as_template_faults():
    assert issubclass(TemplateLimitError, SecurityError)


def test_ordinary_templates_still_work_under_the_limits():
    """What marketers actually write: loops over small lists, filters, macros, printf formatting,
    namespace counters, string methods; all render exactly as with plain Jinja2."""
    source = (
        "{% macro price(v) %}{{ '%.2f'|format(v) }} EUR{% endmacro %}"
        "{% set ns = namespace(total=0) %}"
        "{% for item in customer.orders %}{% set ns.total = ns.total + item.price %}"
        "{{ loop.index }}. {{ item.name|title }} {{ price(item.price) }}{{ ', ' if not loop.last }}{% endfor %}"
        " | total {{ price(ns.total) }} | {{ customer.name.upper() }} {{ '-' * 3 }} {{ (range(3)|list)|join(',') }}"
        " {{ customer.name|center(9)|replace(' ', '.') }} {{ ('a' ~ 'b') * 2 }} {{ 2 ** 10 }} {{ '%s%%' % 20 }}"
    )
    env = BoundedSandbox()
    out = render(env.from_string(source), {"customer": {
        "name": "ann", "orders": [{"name": "pizza", "price": 9.5}, {"name": "tiramisu", "price": 4.25}]}})
    assert out == ("1. Pizza 9.50 EUR, 2. Tiramisu 4.25 EUR | total 13.75 EUR | ANN --- 0,1,2"
                   " ...ann... abab 1024 20%")
