"""Request and response models, named by role (Create / Update / Public)."""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator

Objective = Literal["click", "conversion", "revenue"]
Cadence = Literal["manual", "hourly", "daily", "weekly"]
EngineModel = Literal["auto", "independent", "hierarchical", "structured"]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TemplateIn(Strict):
    subject: Annotated[str, Field(min_length=1, max_length=1_000)]
    html: Annotated[str, Field(min_length=1, max_length=200_000)]
    text: Annotated[str, Field(min_length=1, max_length=200_000)]


class ExclusionRule(Strict):
    when: dict[str, str | list[str]] = Field(
        description="Factor -> level (or levels); a variant matching every condition is excluded."
    )
    segments: list[str] | None = Field(
        None, description="Only exclude for these segments; omitted: exclude everywhere."
    )


class CampaignCreate(Strict):
    name: ShortText
    factors: dict[str, list[str]] = Field(description="Factor name -> its levels, in order.")
    exclusions: list[ExclusionRule] = []
    segments: Annotated[list[str], Field(min_length=1)]
    objective: Objective = "conversion"
    holdout_share: Annotated[float, Field(ge=0.0, le=0.5)] = 0.1
    baseline: dict[str, str] | None = Field(
        None, description="The control group's message: a level per factor (default: each first level)."
    )
    cadence: Cadence = "weekly"
    landing_url: HttpUrl
    template: TemplateIn
    exploration_floor: Annotated[float, Field(ge=0.0, lt=1.0)] | None = None
    burn_in_min_sends: Annotated[int, Field(ge=0)] | None = None
    model: EngineModel = Field(
        "auto",
        description="Posterior model: `auto` (structured over the factor levels, the simulations' best), "
        "`structured`, `hierarchical` (pools a variant across segments) or `independent`.",
    )


class CampaignUpdate(Strict):
    """Editable while the campaign is a draft; status only changes through lifecycle actions."""

    name: ShortText | None = None
    holdout_share: Annotated[float, Field(ge=0.0, le=0.5)] | None = None
    cadence: Cadence | None = None
    landing_url: HttpUrl | None = None
    template: TemplateIn | None = None


class CampaignPublic(BaseModel):
    id: int
    name: str
    status: str
    objective: str
    factors: dict[str, list[str]]
    exclusions: list[dict]
    segments: list[str]
    baseline: dict[str, str]
    holdout_share: float
    cadence: str
    landing_url: str
    links: list[str] = Field(description="Literal links of the HTML template; each is tracked when sent.")
    variant_count: int
    exploration_floor: float
    burn_in_min_sends: int
    model: str
    created_at: datetime
    started_at: datetime | None
    next_period_at: datetime | None


class VariantPublic(BaseModel):
    arm: int
    key: str
    params: dict[str, str]


class SegmentCreate(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,64}$")]
    description: Annotated[str, Field(max_length=500)] = ""


class SegmentPublic(BaseModel):
    id: int
    name: str
    description: str
    customers: int


class CustomerIn(Strict):
    external_id: Annotated[str, Field(min_length=1, max_length=200)]
    email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320)]
    segment: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    attributes: dict[str, str | int | float | bool | None] = {}
    consent: bool | None = Field(
        None, description="Marketing consent; omitted: new customers consent, known ones keep theirs."
    )


class CustomersIn(Strict):
    customers: Annotated[list[CustomerIn], Field(min_length=1)]


class ImportResult(BaseModel):
    received: int
    inserted: int
    updated: int


class CustomerPublic(BaseModel):
    external_id: str
    email: str
    segment: str
    status: str
    attributes: dict


class OrderIn(Strict):
    order_id: Annotated[str, Field(min_length=1, max_length=200)]
    customer_external_id: Annotated[str, Field(min_length=1, max_length=200)]
    ordered_at: datetime
    amount: Annotated[float, Field(ge=0)]


class OrdersIn(Strict):
    orders: Annotated[list[OrderIn], Field(min_length=1)]


class DeriveResult(BaseModel):
    as_of: datetime
    customers: int
    by_segment: dict[str, int]


class EventIn(Strict):
    event_id: Annotated[str, Field(min_length=1, max_length=200)]
    type: Literal["click", "conversion"]
    send_id: int | None = None
    campaign_id: int | None = None
    customer_external_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    revenue: Annotated[float, Field(ge=0)] = 0.0
    occurred_at: datetime | None = None

    @field_validator("revenue")
    @classmethod
    def _finite(cls, v: float) -> float:
        if v != v or v == float("inf"):
            raise ValueError("revenue must be a finite number")
        return v


class EventsIn(Strict):
    events: Annotated[list[EventIn], Field(min_length=1)]


class EventsAccepted(BaseModel):
    accepted: int


class PeriodPublic(BaseModel):
    id: int
    campaign_id: int
    number: int
    status: str
    seed: int
    total: int
    sent: int
    failed: int
    remaining: int
    chunks: int
    rate_per_second: float | None = Field(description="Sends settled per second since the period started.")
    eta_seconds: float | None = Field(description="Estimated seconds until every send is settled.")
    error: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None


class SnapshotPublic(BaseModel):
    id: int
    period_number: int
    segment: str
    seed: int
    stage: str
    reason: str | None
    holdout_share: float
    arms: list[int]
    weights: list[float]
    p_best: list[float]
    counts: dict
    diagnostics: dict
    created_at: datetime


class ApiKeyCreate(Strict):
    name: ShortText
    role: Literal["admin", "marketer", "analyst", "ingest"]


class ApiKeyCreated(BaseModel):
    id: int
    name: str
    role: str
    key: str = Field(description="Shown once; only its hash is stored.")
