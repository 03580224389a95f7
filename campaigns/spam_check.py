"""A spam check you can run: a campaign's emails, built exactly as they are sent (headers, List-Id,
DKIM), scored by SpamAssassin with its local rules only (`spamassassin -L -t`: no network tests, so
no DNS blocklists, no DKIM key lookups).

SpamAssassin is Debian's `spamassassin` package; where it is not installed the check says so.
"""

import random
import re
import shutil
import subprocess  # noqa: S404 (a fixed argument list, no shell)
from dataclasses import dataclass

from sqlmodel import Session

from campaigns import dkim_signing, signing
from campaigns.errors import NotFound
from campaigns.rendering import CompiledCampaign, MessageWriter, list_id, rewrite_links
from campaigns.repositories import campaigns as repo
from campaigns.repositories import customers as customer_repo
from campaigns.settings import Settings

THRESHOLD = 0.0  # what we require; SpamAssassin itself calls 5.0 spam
_STATUS = re.compile(r"^X-Spam-Status: .*?score=(-?[0-9.]+).*?tests=(.*?)(?:\s+autolearn=|\s+version=|$)",
                     re.S | re.M)


class SpamAssassinMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class Score:
    label: str
    score: float
    rules: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return self.score <= THRESHOLD


def available() -> bool:
    return shutil.which("spamassassin") is not None


def score(raw: bytes, label: str = "") -> Score:
    """SpamAssassin's score and the rules that fired, local rules only."""
    binary = shutil.which("spamassassin")
    if binary is None:
        raise SpamAssassinMissing("spamassassin is not installed (Debian: apt-get install spamassassin)")
    done = subprocess.run([binary, "-L", "-t", "--cf=report_safe 0"], input=raw, capture_output=True,  # noqa: S603
                          timeout=120, check=False)
    head = done.stdout.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].decode("utf-8", "replace")
    found = _STATUS.search(re.sub(r"\r?\n[ \t]+", " ", head))
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"spamassassin failed (exit {done.returncode}): {done.stderr.decode()[-500:]}")
    rules = tuple(r for r in re.split(r"[,\s]+", found.group(2).strip()) if r and r != "none")
    return Score(label, float(found.group(1)), rules)


def campaign_messages(session: Session, campaign_id: int, settings: Settings, limit: int = 5) -> list[tuple]:
    """(label, raw) of up to `limit` of the campaign's emails: the baseline and variants sampled from
    the grid, each for a different sample customer of its segments, built as the sender builds them."""
    campaign = repo.get_campaign(session, campaign_id)
    if campaign is None:
        raise NotFound(f"campaign {campaign_id} not found")
    variants = repo.variants(session, campaign_id)
    picks = [("baseline", campaign.baseline)]
    # a fixed-seed sample across the grid (a stride would keep hitting the same levels of the last factors)
    chosen = sorted(random.Random(0).sample(variants, min(len(variants), max(0, limit - 1))), key=lambda v: v.arm)
    picks += [(f"variant {v.arm} {v.params}", v.params) for v in chosen]
    segment_ids = [s.id for s in repo.campaign_segments(session, campaign_id)]
    people = customer_repo.sample_active(session, segment_ids, len(picks))
    if not people:
        raise NotFound(f"campaign {campaign_id} has no active customer to build a sample email for")
    domain = settings.mail_from.rsplit("@", 1)[-1].rstrip(">") or "localhost"
    compiled = CompiledCampaign.compile(campaign.name, {"subject": campaign.subject_template,
                                                       "html": campaign.html_template,
                                                       "text": campaign.text_template})
    writer = MessageWriter(settings.mail_from, domain, list_id(campaign.id, campaign.name, domain),
                           dkim_signing.signer_for(settings))
    base = settings.public_base_url.rstrip("/")
    mailto = settings.unsubscribe_mailto or f"unsubscribe@{domain}"
    links = {url: n + 1 for n, url in enumerate(campaign.links)}
    out = []
    for i, (label, params) in enumerate(picks):
        person = people[i % len(people)]
        token = signing.sign("unsub", 0)  # send id 0: a sample, never a real send
        customer = {"external_id": person.external_id, "email": person.email, **(person.attributes or {})}
        subject, html, text = compiled.render(params, customer, f"{base}/t/{signing.sign_click(0, 0, campaign.id)}",
                                              f"{base}/u/{token}")
        html = rewrite_links(html, links, lambda n: f"{base}/t/{signing.sign_click(n, 0, campaign.id)}")
        msg = writer.build(to=person.email, subject=subject, html=html, text=text, unsubscribe_url=f"{base}/u/{token}",
                           unsubscribe_mailto=f"{mailto}?subject={token}", message_id=f"<sample-{i}@{domain}>")
        out.append((label, msg.raw))
    return out
