"""A campaign's real audience: who it reaches (per segment), and whether its templates render for
them. The save-time check renders against made-up values; this one renders for a sample of the
customers the campaign really targets, so a missing or mistyped attribute is found before a single
email is sent."""

import re
from collections import Counter, defaultdict

from jinja2 import nodes
from sqlmodel import Session

from campaigns import attributes
from campaigns.errors import InvalidInput
from campaigns.models import Campaign
from campaigns.rendering import ENVIRONMENTS, TEMPLATE_PARTS, CompiledCampaign
from campaigns.repositories import audience as repo
from campaigns.repositories import campaigns as campaign_repo

SAMPLE = 300  # customers rendered, split across the segments (1.7 s on 200,000: bench_audience_check.py)
SHAPE_SCAN = 2_000  # customers per segment looked at for distinct attribute shapes
MAX_SHAPES = 200  # at most this many extra customers, one per shape not already in the sample
EXAMPLES = 5
MISSING = re.compile(r"no (?:attribute|key|element) '([^']+)'")


class AudienceCheckFailed(InvalidInput):
    """The templates fail for some of the sampled targeted customers: one entry per cause."""

    def __init__(self, problems: list[dict]):
        super().__init__(problems[0]["loc"], problems[0]["msg"])
        self.detail = [{"loc": p["loc"], "msg": p["msg"]} for p in problems]


def reach(session: Session, campaign: Campaign) -> dict:
    """How many customers the campaign would mail per segment now (before holdout and frequency cap)."""
    segments = campaign_repo.campaign_segments(session, campaign.id)
    counts = repo.reach(session, [s.id for s in segments], campaign.audience)
    by_segment = {s.name: counts[s.id] for s in segments}
    return {"total": sum(by_segment.values()), "by_segment": by_segment, "audience": campaign.audience}


def _sample(session: Session, campaign: Campaign) -> list[tuple[str, str, str, dict]]:
    """(segment, external id, email, attributes): a random sample stratified by segment, plus one
    customer of every attribute shape (keys and their types) seen in a wider random scan."""
    segments = campaign_repo.campaign_segments(session, campaign.id)
    per_segment = max(1, SAMPLE // max(1, len(segments)))
    picked, shapes, more = [], set(), []
    for seg in segments:
        scanned = repo.random_sample(session, seg.id, max(SHAPE_SCAN, per_segment), campaign.audience)
        for i, (ext, email, attrs) in enumerate(scanned):
            shape = attributes.shape(attrs or {})
            if i < per_segment:
                picked.append((seg.name, ext, email, attrs or {}))
                shapes.add(shape)
            elif shape not in shapes and len(more) < MAX_SHAPES:
                more.append((seg.name, ext, email, attrs or {}))
                shapes.add(shape)
    return picked + more


def read_attributes(templates: dict[str, str]) -> list[str]:
    """The customer attributes the templates read (`customer.x`, `customer['x']`), in order."""
    names: dict[str, None] = {}
    for part in TEMPLATE_PARTS:
        ast = ENVIRONMENTS[part].parse(templates[part])
        for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
            if isinstance(node.node, nodes.Name) and node.node.name == "customer":
                key = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
                if isinstance(key, str):
                    names[key] = None
    return list(names)


def templates_of(campaign: Campaign) -> dict[str, str]:
    return {"subject": campaign.subject_template, "html": campaign.html_template, "text": campaign.text_template}


def check(session: Session, campaign: Campaign, templates: dict[str, str] | None = None) -> dict:
    """Render every part for the sample (each customer with one variant, the variants and the
    baseline in turn) and group the failures by cause."""
    templates = templates or templates_of(campaign)
    compiled = CompiledCampaign.compile(campaign.name, templates)
    params = [campaign.baseline, *(v.params for v in campaign_repo.variants(session, campaign.id))]
    sample = _sample(session, campaign)
    failures: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    rendered: list[dict] = []
    for i, (_, ext, email, attrs) in enumerate(sample):
        customer = {"external_id": ext, "email": email, **attributes.template_values(attrs)}
        try:
            compiled.render(params[i % len(params)], customer, campaign.landing_url, "#unsubscribe")
            rendered.append(attrs)
        except Exception as exc:  # whatever the template raises for this customer is a finding
            failures[str(exc) or type(exc).__name__].append((ext, attrs))
    read = read_attributes(templates)
    fine = _kinds(rendered, read)
    problems = [_problem(reason, failed, len(sample), read, fine) for reason, failed in failures.items()]
    problems.sort(key=lambda p: -p["count"])
    return {
        "ok": not problems,
        "sampled": len(sample),
        "by_segment": dict(Counter(seg for seg, *_ in sample)),
        "reads": [f"customer.{name}" for name in read],
        "problems": problems,
    }


def _kinds(rows: list[dict], read: list[str]) -> dict[str, set[str]]:
    return {name: {attributes.describe(a[name]) for a in rows if name in a} for name in read}


def _problem(reason: str, failed: list[tuple[str, dict]], sampled: int, read: list[str],
             fine: dict[str, set[str]]) -> dict:
    examples = [ext for ext, _ in failed[:EXAMPLES]]
    share = f"{len(failed)} of {sampled} sampled customers (e.g. {', '.join(examples)})"
    missing = MISSING.search(reason)
    if missing:
        name = missing.group(1)
        return {"loc": f"customer.{name}", "count": len(failed), "examples": examples,
                "msg": f"customer.{name} is missing for {share}"}
    # A wrong type: the attributes the templates read that these customers have with a type the
    # customers it renders for do not have (else every attribute they read, with its type).
    kinds = _kinds([a for _, a in failed], read)
    suspects = [n for n, k in kinds.items() if k - fine.get(n, set())] or [n for n, k in kinds.items() if k]
    loc = f"customer.{suspects[0]}" if len(suspects) == 1 else "template"
    typed = "; ".join(f"customer.{n} is {'/'.join(sorted(kinds[n]))}" for n in suspects)
    detail = f" ({typed} for them)" if typed else ""
    return {"loc": loc, "count": len(failed), "examples": examples, "msg": f"fails for {share}: {reason}{detail}"}


def require_renderable(session: Session, campaign: Campaign, templates: dict[str, str] | None = None) -> None:
    """Refuse (422, naming the attribute) when the templates fail for any sampled targeted customer."""
    result = check(session, campaign, templates)
    if not result["ok"]:
        raise AudienceCheckFailed(result["problems"])
