"""What one customer would receive for one variant: the rendered subject, text, HTML and the
headers, exactly as a send would build them, for drafts and running campaigns alike. Nothing is
written and nothing is sent; links are left untracked (a preview is not a send)."""

import time
from email.parser import BytesHeaderParser

from sqlmodel import Session

from campaigns import attributes, signing
from campaigns.errors import InvalidInput, Unauthorized
from campaigns.models import CampaignStatus, CustomerStatus
from campaigns.rendering import CompiledCampaign, MessageWriter
from campaigns.repositories import audience as audience_repo
from campaigns.repositories import campaigns as repo
from campaigns.services import audience
from campaigns.services.campaigns import get
from campaigns.settings import get_settings

HEADERS = ("From", "To", "Subject", "Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post", "MIME-Version")
LINK_SECONDS = 15 * 60  # a signed preview link works this long


def _variant(session: Session, campaign, variant) -> tuple[int | None, dict, str]:
    """(arm, levels, key) of `variant`: an arm number, "control" (the holdout's baseline), or a
    level per factor."""
    variants = repo.variants(session, campaign.id)
    if variant in ("control", "baseline"):
        return None, campaign.baseline, "control"
    if isinstance(variant, int):
        for v in variants:
            if v.arm == variant:
                return v.arm, v.params, v.key
        raise InvalidInput("variant", f"no variant {variant}: arms are 0 to {len(variants) - 1}")
    if isinstance(variant, dict):
        for v in variants:
            if v.params == variant:
                return v.arm, v.params, v.key
        unknown = sorted(set(variant) - set(campaign.factors))
        if unknown:
            raise InvalidInput(f"variant.{unknown[0]}", f"unknown factor '{unknown[0]}'")
        raise InvalidInput("variant", "no variant has these levels (a level per factor; excluded ones are none)")
    raise InvalidInput("variant", "an arm number, \"control\", or a level per factor")


def preview(session: Session, campaign_id: int, customer_id: str, variant) -> dict:
    campaign = get(session, campaign_id)
    if "\x00" in customer_id:  # PostgreSQL text cannot hold one: a 422, not a 500
        raise InvalidInput("customer", "must not contain NUL characters")
    customer = audience_repo.customer(session, customer_id)
    if customer is None:
        raise InvalidInput("customer", f"no customer with external_id '{customer_id}'")
    arm, params, key = _variant(session, campaign, variant)
    settings = get_settings()
    base = settings.public_base_url.rstrip("/")
    domain = settings.mail_from.rsplit("@", 1)[-1].rstrip(">") or "localhost"
    compiled = CompiledCampaign.compile(campaign.name, audience.templates_of(campaign))
    context = {"external_id": customer.external_id, "email": customer.email,
               **attributes.template_values(customer.attributes or {})}
    try:
        subject, html, text = compiled.render(params, context, campaign.landing_url, f"{base}/u/preview")
    except Exception as exc:  # the template fails for this customer: say why, as the send would
        raise InvalidInput("customer", f"the template fails for customer '{customer_id}': {exc}") from None
    msg = MessageWriter(settings.mail_from, domain).build(
        to=customer.email, subject=subject, html=html, text=text, unsubscribe_url=f"{base}/u/preview",
        message_id=f"<preview@{domain}>")
    parsed = BytesHeaderParser().parsebytes(msg.raw)
    segment_ids = {s.id for s in repo.campaign_segments(session, campaign.id)}
    return {
        "campaign_id": campaign.id, "campaign_status": campaign.status, "template_version": campaign.template_version,
        "customer": customer.external_id, "variant": {"arm": arm, "key": key, "levels": params},
        "subject": subject, "text": text, "html": html,
        "headers": {h: str(parsed[h]) for h in HEADERS if parsed[h] is not None},
        "targeted": customer.segment_id in segment_ids and customer.status == CustomerStatus.ACTIVE
        and customer.consent, "draft": campaign.status == CampaignStatus.DRAFT,
    }


def _subject(campaign_id: int, customer: str, variant: str, expires: int) -> str:
    return f"{campaign_id}|{customer}|{variant}|{expires}"


def signed_link(campaign_id: int, customer: str, variant: str, now: float | None = None) -> dict:
    """A link to the browser preview that works without an API key for LINK_SECONDS."""
    expires = int((now or time.time()) + LINK_SECONDS)
    mac = signing.sign_link("preview", _subject(campaign_id, customer, variant, expires))
    return {"expires": expires, "sig": mac}


def check_link(campaign_id: int, customer: str, variant: str, expires: int, sig: str) -> None:
    subject = _subject(campaign_id, customer, variant, expires)
    if expires < time.time() or not sig.isascii() or not signing.verify_link("preview", subject, sig):
        raise Unauthorized("the preview link is expired or not genuine: ask for a new one")


def parse_variant(text: str):
    """The `variant` query parameter: an arm number, `control`, or `factor:level,factor:level`."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    if text in ("control", "baseline"):
        return text
    levels = {}
    for pair in text.split(","):
        factor, sep, level = pair.partition(":")
        if not sep:
            raise InvalidInput("variant", "an arm number, control, or factor:level pairs separated by commas")
        levels[factor.strip()] = level.strip()
    return levels

