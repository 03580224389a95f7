"""Request and response models, named by role (Create / Update / Public)."""

import re
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    WrapValidator,
    field_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

Objective = Literal["click", "conversion", "revenue", "profit"]
Cadence = Literal["manual", "hourly", "daily", "weekly", "cron"]
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
EngineModel = Literal["auto", "independent", "hierarchical", "structured"]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]
_NUMBER = re.compile(r"\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*")


def _iso_datetime(value):
    # pydantic also reads a number (0.5, "0.5") as Unix seconds; the documented format is an ISO 8601
    # date-time, and a number there is a client's mistake, not a time in January 1970.
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("Input should be a valid datetime: an ISO 8601 date-time, not a number")
    return value


def _not_bool(value):
    # pydantic reads JSON true/false as 1/0; a number field takes numbers (and, from a CSV row, their text).
    if isinstance(value, bool):
        raise ValueError("expected a number, not true/false")
    return value


IsoDatetime = Annotated[datetime, BeforeValidator(_iso_datetime)]


def _iso_date_text(value):
    # pydantic also reads a number as Unix seconds; a date here is ISO text (2026-03-01), as documented
    if not isinstance(value, str | date):
        raise ValueError("Input should be a valid date: ISO 8601 text such as 2026-03-01")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_date_text)]

# A request's 422 lists at most this many problems, then how many more there were.
MAX_LISTED_PROBLEMS = 50


def _bounded_items(item_type, chunk: int = 1_000):
    """A list validator that keeps only the first MAX_LISTED_PROBLEMS problems, then a count of the
    rest. pydantic keeps an error object, with a reference to its input, for every problem of every
    item: 10 MB of bad items made over a million of them (gigabytes). Validated a chunk of items at a
    time, no more than one chunk's errors exist at once."""
    adapter = TypeAdapter(list[item_type])

    def validate(value, handler):
        if not isinstance(value, list):
            return handler(value)
        items, problems, more = [], [], 0
        for start in range(0, len(value), chunk):
            try:
                validated = adapter.validate_python(value[start:start + chunk])
            except ValidationError as exc:
                room = MAX_LISTED_PROBLEMS - len(problems)
                if room <= 0:
                    more += exc.error_count()
                    continue
                errors = exc.errors(include_url=False, include_context=False)
                more += max(len(errors) - room, 0)
                problems += [InitErrorDetails(type=PydanticCustomError(e["type"], e["msg"]),
                                              loc=(start + e["loc"][0], *e["loc"][1:]), input=None)
                             for e in errors[:room]]
                continue
            if not problems:
                items += validated
        if more:
            problems.append(InitErrorDetails(
                type=PydanticCustomError("too_many_problems", f"and {more:,} more problems (the first "
                                                              f"{MAX_LISTED_PROBLEMS} are listed)"),
                loc=(), input=None))
        if problems:
            raise ValidationError.from_exception_data(item_type.__name__, problems)
        return handler(items)

    return WrapValidator(validate)

# The columns' integer ranges (INTEGER ids and counts; BIGINT sends, events and audit entries, and
# SQLite's one 64-bit INTEGER): a larger number in a request is refused (422) instead of overflowing
# the driver or PostgreSQL (a 500); JSON true/false are not numbers.
INT_MAX = 2**31 - 1
BIGINT_MAX = 2**63 - 1
Id = Annotated[int, BeforeValidator(_not_bool), Field(ge=1, le=INT_MAX)]
BigId = Annotated[int, BeforeValidator(_not_bool), Field(ge=1, le=BIGINT_MAX)]
Count = Annotated[int, BeforeValidator(_not_bool), Field(ge=0, le=INT_MAX)]
Priority = Annotated[StrictInt, Field(ge=-1000, le=1000, description=(
    "Under the frequency cap, which campaign gets a customer that several want: higher first "
    "(ties: the better expected value, then the older campaign). Default 0."))]
Number = Annotated[float, BeforeValidator(_not_bool)]


def has_nul(value) -> bool:
    """A NUL character anywhere in a string, a list or a dict (keys too): PostgreSQL text cannot hold one."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(has_nul(v) for v in value)
    return False


class Strict(BaseModel):
    """Every request body: unknown fields refused, and no NUL characters (a 500 from PostgreSQL else)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value):
        if has_nul(value):
            raise ValueError("must not contain NUL (\\u0000) characters")
        return value


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


class ScheduleIn(Strict):
    """When a recurring cadence sends, in local time (campaigns.schedules)."""

    weekday: Weekday | None = Field(None, description="weekly: the day (default monday).")
    hour: Annotated[int, BeforeValidator(_not_bool), Field(ge=0, le=23)] | None = Field(
        None, description="weekly, daily: the local hour (default 9).")
    minute: Annotated[int, BeforeValidator(_not_bool), Field(ge=0, le=59)] | None = Field(
        None, description="The minute past the hour (default 0).")
    timezone: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        None, description="An IANA time zone such as Europe/Paris (default UTC).")
    cron: Annotated[str, Field(min_length=9, max_length=200)] | None = Field(
        None, description="cron cadence: minute hour day-of-month month day-of-week, e.g. `0 9 * * 1`.")


class WavesIn(Strict):
    """Test, then send: each period mails a first share of every segment, waits, then mails the rest
    from the updated posterior (campaigns.waves)."""

    first_share: Annotated[Number, Field(gt=0.0, lt=1.0)] = Field(
        description="The share of each segment's eligible customers in the first wave, strictly between 0 and 1.")
    wait_hours: Annotated[Number, Field(gt=0.0, le=168.0)] = Field(
        description="Hours between the first wave and the second (at most 168); shorter than the cadence's interval.")


AttributeName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
ListName = Annotated[str, Field(min_length=1, max_length=64)]
# strict: "12" stays text and 12 a number, as the attributes they are compared with
Scalar = StrictBool | StrictInt | StrictFloat | Annotated[StrictStr, Field(max_length=200)]


class AttributeCondition(Strict):
    """One condition on a customer attribute; every given operator must hold."""

    attribute: AttributeName
    equals: Scalar | None = None
    one_of: Annotated[list[Scalar], Field(min_length=1, max_length=1000)] | None = None
    min: Number | None = Field(None, description="A number at least this.")
    max: Number | None = Field(None, description="A number at most this.")
    since: IsoDate | None = Field(None, description="A date on or after this (ISO).")
    until: IsoDate | None = Field(None, description="A date on or before this (ISO).")


class AudienceIn(Strict):
    """Who a campaign mails in its segments: customers for whom every condition holds and, when
    lists are given, who are in at least one of them."""

    filter: Annotated[list[AttributeCondition], Field(max_length=50)] = []
    lists: Annotated[list[ListName], Field(max_length=100)] = []


Money = Annotated[Number, Field(ge=0.0, allow_inf_nan=False)]


class LevelCost(Strict):
    """What one factor level costs per conversion it brings."""

    share: Annotated[Number, Field(ge=0.0, le=1.0, allow_inf_nan=False)] = Field(
        0.0, description="Share of the order value given away (a 20% discount: 0.2), in [0, 1].")
    fixed: Money = Field(0.0, description="Money spent per conversion (a free dessert: its cost), >= 0.")


class EconomicsIn(Strict):
    """The profit objective's economics: profit per send = revenue x (margin - the variant's cost shares)
    - conversions x its fixed costs - unsubscribes x unsubscribe_cost (campaigns/economics.py)."""

    margin: Annotated[Number, Field(ge=0.0, le=1.0, allow_inf_nan=False)] = Field(
        description="Gross margin on revenue, in [0, 1].")
    unsubscribe_cost: Money = Field(0.0, description="The value of a subscriber lost to an unsubscribe, >= 0.")
    level_costs: dict[str, dict[str, LevelCost]] = Field(
        default_factory=dict, description="Factor -> level -> its cost; levels not listed cost nothing.")


class CampaignCreate(Strict):
    name: ShortText
    factors: dict[str, list[str]] = Field(description="Factor name -> its levels, in order.")
    exclusions: list[ExclusionRule] = []
    segments: Annotated[list[str], Field(min_length=1)]
    objective: Objective = "conversion"
    holdout_share: Annotated[Number, Field(ge=0.0, le=0.5)] = 0.1
    baseline: dict[str, str] | None = Field(
        None, description="The control group's message: a level per factor (default: each first level)."
    )
    cadence: Cadence = Field("manual", description="manual (periods only when asked), or a recurring "
                             "schedule: weekly, daily, hourly or cron, at the slots of `schedule`.")
    schedule: ScheduleIn | None = None
    audience: AudienceIn | None = Field(None, description="Beyond the segments: an attribute filter and lists.")
    landing_url: HttpUrl
    template: TemplateIn
    exploration_floor: Annotated[Number, Field(ge=0.0, lt=1.0)] | None = None
    burn_in_min_sends: Count | None = None
    model: EngineModel = Field(
        "auto",
        description="Posterior model: `auto` (structured over the factor levels, the simulations' best), "
        "`structured`, `hierarchical` (pools a variant across segments) or `independent`. The profit "
        "objective needs `hierarchical` or `independent`; with it `auto` is `hierarchical`.",
    )
    waves: WavesIn | None = Field(None, description="Split each period into two waves (default: one wave).")
    economics: EconomicsIn | None = Field(
        None, description="Required by, and only allowed with, objective `profit`: margin, level costs, "
        "unsubscribe cost.")
    send_windows: Annotated[list[Annotated[str, Field(max_length=40)]], Field(max_length=28)] | None = Field(
        None, description="Local send times, a weekday and a time each, e.g. `[\"tue 09:00\", \"sat 11:00\"]`: "
        "the levels of the built-in factor `send_window`, learned like any factor. Each email leaves at its "
        "window's next opening in the customer's time zone (attribute `timezone`).")
    send_window_timezone: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        None, description="The time zone of customers without a valid `timezone` attribute (default: the "
        "schedule's, else UTC).")
    priority: Priority = 0


class CampaignUpdate(Strict):
    """Editable while the campaign is a draft; status only changes through lifecycle actions."""

    name: ShortText | None = None
    holdout_share: Annotated[Number, Field(ge=0.0, le=0.5)] | None = None
    cadence: Cadence | None = None
    schedule: ScheduleIn | None = None
    audience: AudienceIn | None = None
    landing_url: HttpUrl | None = None
    waves: WavesIn | None = None
    economics: EconomicsIn | None = Field(None, description="A draft profit campaign's economics (replaced whole).")
    template: TemplateIn | None = Field(None, description="Drafts; a paused campaign too (a new template "
                                        "version, checked against its audience, used by every email rendered after).")
    priority: Priority | None = Field(None, description="Any status: alone, also on an active or paused campaign.")


class PreviewIn(Strict):
    customer: Annotated[str, Field(min_length=1, max_length=200, description="The customer's external id.")]
    variant: Annotated[int, BeforeValidator(_not_bool), Field(ge=0, le=INT_MAX)] | Literal["control"] | dict[
        str, str] = Field(description="An arm number, \"control\" (the holdout's message), or a level per factor.")


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
    schedule: dict | None = Field(None, description="The recurring cadence's slot (local time and time zone).")
    template_version: int = 1
    audience: dict | None = Field(None, description="The attribute filter and lists, beyond the segments.")
    landing_url: str
    links: list[str] = Field(description="Literal links of the HTML template; each is tracked when sent.")
    variant_count: int
    exploration_floor: float
    burn_in_min_sends: int
    model: str
    waves: dict | None = Field(None, description="The first wave's share and the wait before the second.")
    economics: dict | None = Field(None, description="The profit objective's margin, level costs and unsubscribe cost.")
    priority: int = 0
    created_at: datetime
    started_at: datetime | None
    next_period_at: datetime | None = Field(description="The next scheduled send (none for a manual cadence).")
    status_reason: str | None = Field(None, description="Why the campaign has its status, e.g. the guard's auto-pause.")
    send_windows: list[str] | None = Field(None, description="Local send times (the `send_window` factor's levels).")
    send_window_timezone: str | None = Field(None, description="The time zone of customers without a valid "
                                             "`timezone` attribute.")


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
    lists: Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(max_length=100)] | None = Field(
        None, description="The named lists the customer is in (a campaign's audience can target them).")
    consent: StrictBool | None = Field(
        None, description="Marketing consent; omitted: new customers consent, known ones keep theirs."
    )


class CustomersIn(Strict):
    customers: Annotated[list[CustomerIn], Field(min_length=1), _bounded_items(CustomerIn)]


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
    ordered_at: IsoDatetime
    amount: Annotated[Number, Field(ge=0)]


class OrdersIn(Strict):
    orders: Annotated[list[OrderIn], Field(min_length=1), _bounded_items(OrderIn)]


class DeriveResult(BaseModel):
    as_of: datetime
    customers: int
    by_segment: dict[str, int]


USER_AGENT_MAX = 512  # the tracking link truncates longer ones; /events refuses them


class EventIn(Strict):
    event_id: Annotated[str, Field(min_length=1, max_length=200)]
    type: Literal["click", "conversion", "complaint"]
    send_id: BigId | None = None
    campaign_id: Id | None = None
    customer_external_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    revenue: Annotated[Number, Field(ge=0)] = 0.0
    occurred_at: IsoDatetime | None = None
    user_agent: Annotated[str, Field(max_length=USER_AGENT_MAX)] | None = Field(
        None, description="A click's User-Agent: known scanners and bots are excluded from the rewards."
    )
    link: Count | None = Field(
        None, description="Which link of the email was clicked (0: the landing URL); used to detect bursts."
    )

    @field_validator("revenue")
    @classmethod
    def _finite(cls, v: float) -> float:
        if v != v or v == float("inf"):
            raise ValueError("revenue must be a finite number")
        return v


class EventsIn(Strict):
    events: Annotated[list[EventIn], Field(min_length=1), _bounded_items(EventIn)]


class EventsAccepted(BaseModel):
    accepted: int


class FailureReason(BaseModel):
    reason: str
    count: int
    examples: list[str]


class WindowProgress(BaseModel):
    window: str = Field(description="The window, e.g. `tue 09:00` (local time).")
    opens_at: datetime | None = Field(description="When it opens (UTC): the earliest of its customers' time zones.")
    closes_at: datetime | None = Field(description="When it opens in the last of its customers' time zones (UTC).")
    state: str = Field(description="waiting (not open yet), sending, or done.")
    total: int
    sent: int
    failed: int
    chunks: int
    chunks_done: int


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
    rate_per_second: float | None = Field(description="Sends settled per second lately (decayed over about 30 s; "
                                          "a finished period: its average). Falls towards 0 when the period stalls.")
    eta_seconds: float | None = Field(description="Estimated seconds until every send is settled, from the recent "
                                      "rate; none while planning, paused or stalled.")
    state: str = Field(description="queued, planning, sending, waiting (between two waves, or for a send window to "
                       "open), paused, stalled, completed or failed.")
    wave: int = Field(1, description="The wave being sent or planned (1 for a period without waves).")
    waves: dict | None = Field(None, description="The campaign's waves setting as the period started (none: one "
                               "wave).")
    next_wave_at: datetime | None = Field(None, description="When the next wave is planned, while the period "
                                          "waits between two waves.")
    state_reason: str | None = Field(description="Why it is paused, stalled, failed or waiting, in words; and, "
                                     "while it sends over SMTP, which recipient domain groups are backing off "
                                     "after deferrals, until when.")
    stalled_since: datetime | None = Field(description="When a stalled period last moved.")
    failures: list[FailureReason] = Field(description="Failed sends by reason, most frequent first, with up to "
                                          "three example customers (external ids) each.")
    redispatched_at: datetime | None = Field(description="When the sweeper last handed out this period's work "
                                             "again after its task was lost.")
    error: str | None
    created_at: datetime
    started_at: datetime | None
    planned_at: datetime | None = Field(description="When every segment was claimed. Until then the plan is still "
                                        "claiming segment by segment (delivery has started), `total` and `chunks` "
                                        "grow, and there is no ETA.")
    completed_at: datetime | None
    windows: list[WindowProgress] = Field([], description="Send windows: progress per window (empty without).")
    timezone_fallbacks: int = Field(0, description="Customers whose `timezone` attribute named no known time "
                                    "zone: their emails left in the campaign's time zone.")
    lost_to: dict[str, int] = Field(default_factory=dict, description=(
        "Targeted customers left out because another campaign took their frequency-cap slot, by that "
        "campaign's id (its own id: the campaign's earlier emails in the window)."))


class SnapshotPublic(BaseModel):
    id: int
    period_number: int
    wave: int = Field(1, description="The period's wave this snapshot allocated (1 without waves).")
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


# --- Model versions: promote, roll back, resume learning (per campaign segment) -------------------

Reason = Annotated[str, Field(min_length=1, max_length=2_000, description="Why: kept in the timeline.")]


class ActionIn(Strict):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)  # a blank reason is no reason


class PromoteIn(ActionIn):
    arm: Count | None = Field(None, description="The arm to send (or give `variant_key`).")
    variant_key: Annotated[str, Field(min_length=1, max_length=2_000)] | None = Field(
        None, description="The variant's key, e.g. `tone=urgent|offer=free_drink` (or give `arm`)."
    )
    reason: Reason


class RollbackIn(ActionIn):
    to_period: Id | None = Field(
        None, description="Pin the weights of this period's allocation snapshot (or give `to`)."
    )
    to: Literal["uniform"] | None = Field(None, description="`uniform`: equal weights over the eligible variants.")
    reason: Reason


class ResumeIn(ActionIn):
    reason: Reason


class ModelActionPublic(BaseModel):
    id: int
    created_at: datetime
    key_name: str = Field(description="Who: the name of the API key that acted.")
    key_role: str
    action: str = Field(description="promote, rollback, uniform or resume.")
    segment: str
    arm: int | None
    variant_key: str | None
    pinned_period: int | None
    detail: str
    reason: str


class SegmentModePublic(BaseModel):
    segment: str
    mode: str = Field(description="learning, promoted, pinned or uniform: what the next period will use.")
    arm: int | None = None
    variant_key: str | None = None
    pinned_period: int | None = None
    detail: str
    since: datetime | None = Field(description="When the action that set the mode was taken (None: never).")
    action_id: int | None = None


class VersionsPublic(BaseModel):
    campaign_id: int
    segments: list[SegmentModePublic]
    timeline: list[ModelActionPublic] = Field(description="Every action, oldest first.")


# --- Keys, the audit log, GDPR export and erasure ----------------------------------------------------


class ApiKeyPublic(BaseModel):
    id: int
    name: str
    role: str
    prefix: str = Field(description="The key's first characters (`mab_` and 6 more): which key you hold.")
    created_at: datetime
    revoked_at: datetime | None


class AuditEntryPublic(BaseModel):
    id: int
    at: datetime
    key_id: int | None = Field(description="The API key that made the call.")
    key_name: str | None
    key_role: str | None
    action: str = Field(description='Method and route template, e.g. "POST /campaigns/{campaign_id}/start".')
    object_type: str | None = Field(description="campaign, api_key, segment, customer (internal id), order, event.")
    object_id: int | None
    status_code: int
    outcome: Literal["success", "refused"]
    request_id: str | None = Field(description="The X-Request-ID of the call.")
    detail: dict = Field(description="Other path parameters, ids the call created, or why it was refused.")


class CustomerProfileExport(BaseModel):
    id: int
    external_id: str
    email: str
    segment: str | None
    status: str
    consent: bool
    attributes: dict
    created_at: datetime
    updated_at: datetime


class OrderExport(BaseModel):
    order_id: str
    ordered_at: datetime
    amount: float


class SendExport(BaseModel):
    send_id: int
    campaign_id: int
    campaign: str | None
    period: int | None
    segment: str | None
    group: Literal["control", "bandit"]
    arm: int
    variant: str | None = Field(description="The variant's key; None for the control group (the baseline email).")
    params: dict | None
    propensity: float
    status: str
    error: str | None
    message_id: str | None
    sent_at: datetime | None
    clicks: int
    first_click_at: datetime | None
    conversions: int
    first_conversion_at: datetime | None
    revenue: float


class EventExport(BaseModel):
    event_id: str
    type: str
    status: str
    reason: str | None
    campaign_id: int | None
    send_id: int | None
    customer_external_id: str | None
    revenue: float
    occurred_at: datetime
    received_at: datetime
    user_agent: str | None
    link: int | None


class CustomerExport(BaseModel):
    exported_at: datetime
    customer: CustomerProfileExport
    orders: list[OrderExport]
    sends: list[SendExport]
    events: list[EventExport]


class ErasureResult(BaseModel):
    customer_id: int = Field(description="The internal id, kept: the send ledger's rows still point at it.")
    external_id: str = Field(description="The placeholder that replaced the external id.")
    status: str
    orders_deleted: int
    events_scrubbed: int = Field(description="Events whose customer id and user agent were removed.")
    sends_kept: int = Field(description="Ledger rows kept (ids, arms, counts, revenue) for the statistics.")
