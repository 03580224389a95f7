"""Campaigns kept as files (`mab campaign apply campaign.yaml`): the same fields as POST /campaigns,
in YAML or JSON. A file without `id` creates a draft; with `id`, it updates that campaign with the
fields PATCH accepts (a draft's, or a paused campaign's template) and refuses a change to the design."""

from pathlib import Path

import yaml
from pydantic import ValidationError
from sqlmodel import Session

from campaigns.errors import InvalidInput
from campaigns.models import Campaign
from campaigns.schemas import CampaignCreate, CampaignUpdate
from campaigns.services import audit, campaigns, send_windows

# fixed once created: changing them is a new campaign
DESIGN = ("factors", "segments", "objective", "send_windows")


def load(path: str) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInput("file", f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "file"
        raise InvalidInput(where, f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise InvalidInput("file", "expected a mapping of campaign fields (name, factors, segments, …)")
    return data


def _parsed(model, data: dict):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InvalidInput(".".join(str(p) for p in err["loc"]) or "file", err["msg"]) from None


def apply(session: Session, data: dict) -> tuple[Campaign, bool]:
    """(the campaign, whether it was created)."""
    data = dict(data)
    campaign_id = data.pop("id", None)
    full = _parsed(CampaignCreate, data)  # the whole file is checked either way
    if campaign_id is None:
        campaign = campaigns.create(session, full)
        audit.record_operator(session, "CLI mab campaign apply", "campaign", campaign.id, {"created": True})
        return campaign, True
    if not isinstance(campaign_id, int) or isinstance(campaign_id, bool):
        raise InvalidInput("id", "the id of an existing campaign (a number)")
    current = send_windows.as_declared(campaigns.to_public(session, campaigns.get(session, campaign_id)))
    data = send_windows.as_declared(data)
    for field in DESIGN:
        if field in data and data[field] != current[field]:
            raise InvalidInput(field, f"differs from campaign {campaign_id}'s: the design is fixed once created "
                               "(remove `id` to create a new campaign)")
    editable = set(CampaignUpdate.model_fields)
    if current["status"] == "paused":
        editable = {"template"}  # a paused campaign takes a new template, nothing else
    changes = {k: v for k, v in full.model_dump(mode="json", exclude_unset=True).items() if k in editable}
    stored = campaigns.get(session, campaign_id)
    if changes.get("template") == {"subject": stored.subject_template, "html": stored.html_template,
                                   "text": stored.text_template}:
        changes.pop("template")  # unchanged: no new template version
    if not changes:
        return stored, False
    campaign = campaigns.update(session, campaign_id, _parsed(CampaignUpdate, changes))
    audit.record_operator(session, "CLI mab campaign apply", "campaign", campaign.id, {"fields": sorted(changes)})
    return campaign, False
