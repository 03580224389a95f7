"""Email templates: validated when saved, compiled once per period, rendered per customer.

Templates run in a bounded Jinja2 sandbox (`campaigns.sandbox`: no private attributes, no
`str.format`, every operation capped in time and memory) with autoescape on for HTML. At save time
a template is also checked statically (private or dunder attributes, `|attr`, `.format`, loading
other templates, recursive macros and loops are refused before they could ever run) and then
trial-rendered for the baseline and every variant under the same limits.
"""

import binascii
import multiprocessing
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from email.utils import formataddr, formatdate, parseaddr
from functools import lru_cache

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes

from campaigns.errors import InvalidInput
from campaigns.sandbox import BoundedSandbox, TemplateSet, render

TEMPLATE_PARTS = ("subject", "html", "text")
# Names every template may use besides the campaign's factor names.
CONTEXT_NAMES = {"params", "customer", "campaign", "landing_url", "unsubscribe_url"}
FORBIDDEN_FILTERS = {"attr"}
FORMAT_METHODS = {"format", "format_map"}
# Filters that look attributes up by a name given as a string argument.
ATTRIBUTE_FILTERS = {"map", "selectattr", "rejectattr", "sort", "groupby", "sum", "unique", "min", "max", "join"}
# Save time trial-renders every variant: all of it together may take this long (each render is also
# capped on its own), so a slow template cannot hold an API worker for long.
TRIAL_RENDER_SECONDS = 5.0
# What a trial-render process may take on top of that to start and answer before it is killed.
TRIAL_PROCESS_SLACK_SECONDS = 5.0


def _environment(autoescape: bool) -> BoundedSandbox:
    return BoundedSandbox(autoescape=autoescape, undefined=StrictUndefined)


ENVIRONMENTS = {"subject": _environment(False), "html": _environment(True), "text": _environment(False)}


class _AnyValue:
    """Stands for any customer attribute in trial renders at save time: it supports attribute and
    item access, arithmetic, comparison and iteration, so only mistakes of the template itself
    (an unknown variable, a bad filter call) fail there; a customer's bad data fails at send time,
    for that customer alone."""

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return self

    def __getitem__(self, key):
        return self

    def __call__(self, *args, **kwargs):
        return self

    def __str__(self):
        return "sample"

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0

    def __bool__(self):
        return True

    def __int__(self):
        return 1

    def __float__(self):
        return 1.0

    def __index__(self):
        return 1

    def _same(self, *_):
        return self

    def _false(self, *_):
        return False

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _same
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = __pow__ = __neg__ = _same
    __lt__ = __le__ = __gt__ = __ge__ = _false

    def __eq__(self, other):
        return other is self

    __hash__ = object.__hash__


def _check_unsafe(part: str, ast: nodes.Template) -> None:
    problem = _unsafe_node(ast) or _macro_cycle(ast)
    if problem:
        raise InvalidInput(f"template.{part}", problem)


def _unsafe_node(ast: nodes.Template) -> str | None:
    """The first construct of the template that is refused outright, described; None if none."""
    for node in ast.find_all(nodes.Node):
        if isinstance(node, (nodes.Getattr, nodes.NSRef)):
            if node.attr.startswith("_"):
                return f"access to private attribute '{node.attr}' is not allowed"
            if node.attr in FORMAT_METHODS:
                return f"the '{node.attr}' method is not allowed (use the |format filter)"
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            key = str(node.arg.value)
            if key.startswith("_"):
                return f"access to private item '{key}' is not allowed"
            if key in FORMAT_METHODS:
                return f"the '{key}' method is not allowed (use the |format filter)"
        elif isinstance(node, nodes.Filter):
            if node.name in FORBIDDEN_FILTERS:
                return f"the '{node.name}' filter is not allowed"
            private = _private_attribute_argument(node)
            if private:
                return f"access to private attribute '{private}' is not allowed (in the '{node.name}' filter)"
        elif isinstance(node, nodes.Name) and node.name == "self":
            return "'self' (the template's own internals) is not allowed"
        elif isinstance(node, (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
            return "a campaign template cannot load other templates (extends, include, import)"
        elif isinstance(node, nodes.For) and node.recursive:
            return "recursive loops are not allowed"
    return None


def _private_attribute_argument(node: nodes.Filter) -> str | None:
    """`|map(attribute='__class__')`, `|selectattr('_x')`, `|sort(attribute='a.__b')` ...: the
    filters that look an attribute up by name go through the sandbox too, but are refused early."""
    if node.name not in ATTRIBUTE_FILTERS:
        return None
    names = [kw.value for kw in node.kwargs if kw.key == "attribute"]
    if node.name in ("selectattr", "rejectattr", "groupby") and node.args:
        names.append(node.args[0])
    for name in names:
        if isinstance(name, nodes.Const) and isinstance(name.value, str):
            if any(piece.startswith("_") for piece in name.value.split(".")):
                return name.value
    return None


def _macro_cycle(ast: nodes.Template) -> str | None:
    """A macro that calls itself, directly or through other macros (or is handed to itself): each
    nesting level would be a Python stack frame, and the depth is the template author's choice."""
    macros = {m.name: m for m in ast.find_all(nodes.Macro)}
    refers = {
        name: {n.name for n in macro.find_all(nodes.Name) if n.name in macros and n.ctx == "load"}
        for name, macro in macros.items()
    }
    for start in sorted(macros):
        parent, queue = {}, [start]
        while queue:
            current = queue.pop(0)
            for callee in sorted(refers[current]):
                if callee == start:
                    if current == start:
                        return f"macro '{start}' calls itself (recursion is not allowed)"
                    chain = [current]
                    while chain[-1] != start:
                        chain.append(parent[chain[-1]])
                    names = " -> ".join(f"'{n}'" for n in [*reversed(chain), start])
                    return f"macros {names} call each other in a cycle (recursion is not allowed)"
                if callee not in parent:
                    parent[callee] = current
                    queue.append(callee)
    return None


def validate_templates(templates: dict[str, str], factor_names: set[str], sample_params: list[dict]) -> None:
    """Refuse a template that does not compile, uses an unknown variable, is unsafe, or fails (or
    hits a limit) when rendered for the baseline or any variant."""
    allowed = CONTEXT_NAMES | factor_names
    deadline = time.monotonic() + TRIAL_RENDER_SECONDS
    for part in TEMPLATE_PARTS:
        source = templates[part]
        env = ENVIRONMENTS[part]
        try:
            ast = env.parse(source)
        except TemplateSyntaxError as exc:
            raise InvalidInput(f"template.{part}", f"does not compile: {exc.message} (line {exc.lineno})") from None
        except RecursionError:
            raise InvalidInput(f"template.{part}", "does not compile: nested too deeply") from None
        _check_unsafe(part, ast)
        try:
            undeclared = meta.find_undeclared_variables(ast)
            compiled = env.from_string(source)
        except TemplateSyntaxError as exc:
            raise InvalidInput(f"template.{part}", f"does not compile: {exc.message} (line {exc.lineno})") from None
        except (RecursionError, SyntaxError, MemoryError):
            raise InvalidInput(f"template.{part}", "does not compile: nested too deeply") from None
        unknown = sorted(undeclared - allowed)
        if unknown:
            raise InvalidInput(
                f"template.{part}",
                f"undefined variable(s): {', '.join(unknown)}; available: {', '.join(sorted(allowed))}",
            )
        too_slow = InvalidInput(f"template.{part}", f"trial rendering of the {len(sample_params)} variants "
                                f"takes longer than {TRIAL_RENDER_SECONDS:g} s; simplify the template")
        for params in sample_params:
            if time.monotonic() > deadline:
                raise too_slow
            try:
                render(compiled, _context(params, _AnyValue(), "sample", "#", "#"), deadline=deadline)
            except Exception as exc:  # whatever the template raises is the template's fault: 422
                if time.monotonic() > deadline:
                    raise too_slow from None
                raise InvalidInput(f"template.{part}", f"fails to render for {params}: {_reason(exc)}") from None


def trial_render(templates: dict[str, str], factor_names: set[str], sample_params: list[dict]) -> None:
    """`validate_templates` in a child process that is killed once past its time budget.

    The sandbox bounds every step it sees, but one step can be a C call (a regex inside a filter)
    that holds the GIL: in the API process it would stall every request, `/health` included, and no
    in-process clock can stop it. In a child process the API only waits on a pipe, and a child that
    overruns is killed. The children fork from a forkserver that has this module imported, so a save
    pays a fork (milliseconds), not an interpreter start."""
    context = _trial_context()
    receive, send = context.Pipe(duplex=False)
    env = {k: v for k, v in os.environ.items() if k.startswith("MAB_")}
    child = context.Process(target=_trial_child, args=(send, env, templates, sorted(factor_names), sample_params),
                            name="mab-trial-render", daemon=True)
    child.start()
    send.close()
    try:
        if not receive.poll(TRIAL_RENDER_SECONDS + TRIAL_PROCESS_SLACK_SECONDS):
            raise InvalidInput("template", f"trial rendering of the {len(sample_params)} variants takes longer "
                               f"than {TRIAL_RENDER_SECONDS:g} s; simplify the template")
        try:
            outcome = receive.recv()
        except EOFError:
            raise RuntimeError(f"the trial-render process died (exit code {child.exitcode})") from None
    finally:
        receive.close()
        if child.is_alive():
            child.kill()
        child.join()
    if outcome is None:
        return
    kind, first, second = outcome
    if kind == "invalid":
        raise InvalidInput(first, second)
    raise RuntimeError(f"trial rendering failed: {first}: {second}")


_TRIAL_CONTEXT = None


def _trial_context():
    global _TRIAL_CONTEXT
    if _TRIAL_CONTEXT is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["campaigns.rendering"])
        _TRIAL_CONTEXT = context
    return _TRIAL_CONTEXT


def _trial_child(send, env: dict, templates, factor_names, sample_params) -> None:
    # The forkserver's environment is the API's when it started: the settings are the API's now.
    for key in [k for k in os.environ if k.startswith("MAB_")]:
        del os.environ[key]
    os.environ.update(env)
    from campaigns.settings import get_settings

    get_settings.cache_clear()
    try:
        validate_templates(templates, set(factor_names), sample_params)
        outcome = None
    except InvalidInput as exc:
        outcome = ("invalid", exc.field, exc.message)
    except BaseException as exc:  # noqa: BLE001 (sent to the parent, which raises it)
        outcome = ("error", type(exc).__name__, str(exc)[:1000])
    send.send(outcome)
    send.close()


def _reason(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc) or type(exc).__name__


def _context(params, customer, campaign_name, landing_url, unsubscribe_url) -> dict:
    return {
        **params,
        "params": params,
        "customer": customer,
        "campaign": {"name": campaign_name},
        "landing_url": landing_url,
        "unsubscribe_url": unsubscribe_url,
    }


# An absolute link written literally in the template (no Jinja inside): tracked at send time.
STATIC_HREF = re.compile(r'href="(https?://[^"{}<>\s]+)"')


def static_links(html_source: str) -> list[str]:
    """The template's literal links, in order of first appearance."""
    return list(dict.fromkeys(STATIC_HREF.findall(html_source)))


def rewrite_links(html: str, links: dict[str, int], tracked) -> str:
    """Replace each known literal link with `tracked(index)`; anything else is left alone."""
    if not links:  # nothing to track: no regex pass over the HTML
        return html
    return STATIC_HREF.sub(lambda m: f'href="{tracked(links[m.group(1)])}"' if m.group(1) in links else m.group(0),
                           html)


@dataclass(frozen=True)
class CompiledCampaign:
    """The campaign's three templates, compiled once and reused for every customer of a period."""

    name: str
    subject: object
    html: object
    text: object
    parts: TemplateSet = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "parts", TemplateSet((self.subject, self.html, self.text)))

    @classmethod
    def compile(cls, name: str, templates: dict[str, str]) -> "CompiledCampaign":
        return cls(name, *(_compiled(p, templates[p]) for p in TEMPLATE_PARTS))

    def render(self, params, customer, landing_url, unsubscribe_url) -> tuple[str, str, str]:
        # one context build for the three parts (campaigns.sandbox.TemplateSet)
        subject, html, text = self.parts.render(_context(params, customer, self.name, landing_url, unsubscribe_url))
        return " ".join(subject.split()), html, text  # no header injection via newlines


@lru_cache(maxsize=256)
def _compiled(part: str, source: str):
    """A template part compiled once per process, not once per chunk: a worker delivers many
    chunks of the same campaign. Compiled templates are never changed after compilation."""
    return ENVIRONMENTS[part].from_string(source)


def list_id(campaign_id: int, name: str, domain: str) -> str:
    """The campaign's RFC 2919 List-Id: its name as the phrase, `campaign-<id>.<domain>` as the id."""
    phrase = " ".join(name.split())
    if phrase.isascii():
        phrase = '"' + phrase.replace("\\", "\\\\").replace('"', '\\"') + '"'
    else:
        phrase = _encoded_words(phrase)
    return f"{phrase} <campaign-{campaign_id}.{domain}>"


@dataclass(frozen=True)
class OutgoingEmail:
    sender: str
    to: str
    message_id: str
    raw: bytes  # the complete RFC 5322 message, CRLF line endings


def _header(value: str) -> str:
    """RFC 2047-encode a header value only when it is not plain ASCII."""
    return value if value.isascii() else _encoded_words(value)


def _encoded_words(value: str) -> str:
    """`=?utf-8?b?…?=` words of at most 42 bytes of UTF-8 each (68 characters, so a folded line stays
    under 78), never splitting a character, folded with CRLF + space. `email.header.Header` does the
    same ~50 times slower (110 µs for one subject: a Python loop per character)."""
    data = value.encode("utf-8")
    words, start, size = [], 0, len(data)
    while start < size:
        end = min(start + 42, size)
        while end < size and 0x80 <= data[end] < 0xC0:  # a UTF-8 continuation byte: cut before its character
            end -= 1
        words.append(f"=?utf-8?b?{binascii.b2a_base64(data[start:end], newline=False).decode('ascii')}?=")
        start = end
    return "\r\n ".join(words)


@lru_cache(maxsize=16)
def _sender(value: str) -> tuple[str, str]:
    """(From header, envelope address); parsed once, not once per message."""
    name, addr = parseaddr(value)
    return (formataddr((name, addr), charset="utf-8") if name else addr), addr


MAX_7BIT_LINE = 998  # RFC 5322 2.1.1: characters per line, CRLF excluded


def _body(text: str, boundary: str) -> tuple[bytes, bool]:
    """A part's body as it goes on the wire, and whether it is plain 7bit. Every line end (CRLF,
    LF, a lone CR, which SMTP servers refuse as a "bare CR") becomes CRLF. ASCII text whose lines
    fit the 998-character limit goes as is (7bit: what `EmailMessage` also picks for such text,
    and no encoding pass over every email); anything else — non-ASCII, a NUL, a longer line, or
    text that contains this writer's boundary — is quoted-printable (binascii's C encoder)."""
    text = text.replace("\r\n", "\n")
    if "\r" in text:
        text = text.replace("\r", "\n")
    if (text.isascii() and "\x00" not in text and boundary not in text
            and max(map(len, text.split("\n"))) <= MAX_7BIT_LINE):
        return text.encode("ascii").replace(b"\n", b"\r\n"), True
    return binascii.b2a_qp(text.encode("utf-8"), istext=True).replace(b"\n", b"\r\n"), False


class MessageWriter:
    """Writes multipart/alternative emails (text + HTML; each part 7bit when it is ASCII with short
    enough lines, quoted-printable otherwise) with RFC 8058 headers.

    Written directly rather than through `email.message.EmailMessage`, whose header registry made
    building a message ~40x slower than rendering it; the tests parse the result with the `email`
    package and compare it with what `EmailMessage` builds. One writer serves a whole chunk: what does
    not depend on the customer (the From header, the MIME boundary and part headers) is formatted
    once, and the Date header once per second.

    One boundary for many messages is safe: quoted-printable output never contains it (it starts
    with `=_`, and QP writes `=` only as `=3D`, a soft line break, or `=` + two hex digits), and a
    7bit part is only ever text that does not contain it.
    """

    def __init__(self, sender: str, domain: str, list_id: str = "", signer=None):
        self.from_header, self.envelope = _sender(sender)
        self.domain = domain
        # RFC 2919: the campaign is the list; without it SpamAssassin flags the list headers as partial
        self._list_id = f"List-Id: {list_id}\r\n" if list_id else ""
        self._signer = signer  # campaigns.dkim_signing.Signer or None: prepends a DKIM-Signature
        self._boundary = boundary = f"=_{uuid.uuid4().hex}"
        part = ("--{b}\r\nContent-Type: text/{kind}; charset=utf-8\r\n"
                "Content-Transfer-Encoding: {cte}\r\n\r\n")
        preamble = f'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
        # (text part header, html part header), indexed by "is 7bit"
        self._text_head = [(preamble + part.format(b=boundary, kind="plain", cte=cte)).encode("ascii")
                           for cte in ("quoted-printable", "7bit")]
        self._html_head = [("\r\n" + part.format(b=boundary, kind="html", cte=cte)).encode("ascii")
                           for cte in ("quoted-printable", "7bit")]
        self._end = f"\r\n--{boundary}--\r\n".encode("ascii")
        self._second, self._date = -1, ""

    def _now(self) -> str:
        second = int(time.time())
        if second != self._second:
            # formatdate writes UTC as "-0000", which RFC 5322 3.3 reserves for "time zone unknown"
            self._second, self._date = second, formatdate(second, localtime=False)[:-5] + "+0000"
        return self._date

    def build(self, *, to: str, subject: str, html: str, text: str, unsubscribe_url: str,
              unsubscribe_mailto: str = "", message_id: str | None = None,
              envelope_sender: str | None = None) -> OutgoingEmail:
        message_id = message_id or f"<{uuid.uuid4().hex}@{self.domain}>"
        unsubscribe = f"<{unsubscribe_url}>, <mailto:{unsubscribe_mailto}>" if unsubscribe_mailto else \
            f"<{unsubscribe_url}>"
        head = (
            f"From: {self.from_header}\r\n"
            f"To: {to}\r\n"
            f"Subject: {_header(subject)}\r\n"
            f"Date: {self._now()}\r\n"
            f"Message-ID: {message_id}\r\n"
            f"List-Unsubscribe: {unsubscribe}\r\n"
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
            f"{self._list_id}"
        ).encode("ascii")
        text_body, text_7bit = _body(text, self._boundary)
        html_body, html_7bit = _body(html, self._boundary)
        raw = b"".join((head, self._text_head[text_7bit], text_body, self._html_head[html_7bit], html_body,
                        self._end))
        if self._signer is not None:
            raw = self._signer.sign(raw)
        return OutgoingEmail(sender=envelope_sender or self.envelope, to=to, message_id=message_id, raw=raw)
