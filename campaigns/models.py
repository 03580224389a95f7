"""SQLModel tables. Alembic owns the schema: change a table here, then add a migration.

Idempotence lives in the unique constraints below: one send per (period, customer), one event
per event id, one allocation snapshot per (period, segment).
"""

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, UniqueConstraint, text
from sqlmodel import Field, SQLModel


def as_utc(value: datetime) -> datetime:
    """A client's timestamp without an offset is taken to be UTC."""
    return value.replace(tzinfo=UTC) if value.utcoffset() is None else value.astimezone(UTC)


def utcnow() -> datetime:
    """Aware UTC: the columns store UTC and hand back aware datetimes on SQLite and PostgreSQL."""
    return datetime.now(UTC)


class Role(StrEnum):
    ADMIN = "admin"
    MARKETER = "marketer"
    ANALYST = "analyst"
    INGEST = "ingest"


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"


class PeriodStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class ChunkStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"


class CustomerStatus(StrEnum):
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    ERASED = "erased"  # GDPR erasure: personal data removed, never mailed again (only 'active' is selected)


class SendStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"


class EventType(StrEnum):
    CLICK = "click"
    CONVERSION = "conversion"
    UNSUBSCRIBE = "unsubscribe"  # stored by the one-click unsubscribe itself (never a reward)
    COMPLAINT = "complaint"  # a spam complaint reported for a send (never a reward)
    BOUNCE = "bounce"  # a hard bounce reported after delivery (DSN, ESP): the report's bounce rate


class EventStatus(StrEnum):
    APPLIED = "applied"
    UNATTRIBUTED = "unattributed"
    EXCLUDED = "excluded"  # a click judged to come from a scanner or bot: stored, never a reward


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_key"
    id: int | None = Field(default=None, primary_key=True)
    name: str
    role: str
    prefix: str = Field(index=True)
    key_hash: str = Field(unique=True)
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


class Segment(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    description: str = ""


class Customer(SQLModel, table=True):
    # one address, one customer: the import looks an address up without case (migration 0013)
    __table_args__ = (Index("ix_customer_email_lower", text("lower(email)")),)
    id: int | None = Field(default=None, primary_key=True)
    external_id: str = Field(unique=True)
    email: str
    # None until assigned by the import or derived from purchase history; such customers get no mail.
    segment_id: int | None = Field(default=None, foreign_key="segment.id", index=True)
    attributes: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default=CustomerStatus.ACTIVE)
    consent: bool = True  # marketing consent: without it a customer is never selected
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Order(SQLModel, table=True):
    """Purchase history, the input of the behavioural (RFM) segmentation."""

    id: int | None = Field(default=None, primary_key=True)
    order_id: str = Field(unique=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    ordered_at: datetime
    amount: float


class Campaign(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str
    status: str = Field(default=CampaignStatus.DRAFT, index=True)
    objective: str
    factors: dict = Field(sa_column=Column(JSON, nullable=False))  # name -> ordered list of levels
    exclusions: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    baseline: dict = Field(sa_column=Column(JSON, nullable=False))  # the control group's levels
    holdout_share: float
    cadence: str
    landing_url: str
    # static links of the HTML template, rewritten to tracked links at send time (index + 1 in tokens)
    links: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    subject_template: str
    html_template: str
    text_template: str
    exploration_floor: float
    burn_in_min_sends: int
    model: str = "auto"  # the engine's posterior model: auto, independent, hierarchical, structured
    attribution_window_days: int = 7
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    next_period_at: datetime | None = None
    status_reason: str | None = None  # why it has its status, e.g. the guard's auto-pause
    # a recurring cadence's slot: weekday, hour, minute, time zone, or a cron expression (schedules.py)
    schedule: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # who, beyond the segments: an attribute filter and customer lists (campaigns/audience.py)
    audience: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    template_version: int = 1  # one more for every template fixed after the start
    # test, then send: {"first_share": 0.15, "wait_hours": 4}, or None for one wave (campaigns/waves.py)
    waves: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # the profit objective's margin, unsubscribe cost and level costs (campaigns/economics.py)
    economics: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # local send times ("tue 09:00"), the levels of the built-in factor send_window (send_windows.py)
    send_windows: list | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    send_window_timezone: str | None = None  # customers without a valid `timezone` attribute
    # under the frequency cap, who gets a customer several campaigns want: higher first (contention.py)
    priority: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class CampaignSegment(SQLModel, table=True):
    __tablename__ = "campaign_segment"
    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True)
    segment_id: int = Field(foreign_key="segment.id", primary_key=True)


class Variant(SQLModel, table=True):
    """One cell of the factor grid. `arm` is its index in every weight vector of the campaign."""

    __table_args__ = (UniqueConstraint("campaign_id", "arm"),)
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    arm: int
    key: str
    params: dict = Field(sa_column=Column(JSON, nullable=False))


class SendPeriod(SQLModel, table=True):
    __tablename__ = "send_period"
    __table_args__ = (UniqueConstraint("campaign_id", "number"),)
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    number: int
    status: str = Field(default=PeriodStatus.QUEUED)
    seed: int = Field(sa_column=Column(BigInteger, nullable=False))  # 32-bit unsigned seeds
    total: int = 0
    sent: int = 0
    failed: int = 0
    chunks: int = 0
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    # every segment claimed (the plan commits segment by segment, and delivery starts with the first)
    planned_at: datetime | None = None
    guard_tripped_at: datetime | None = None  # the guard paused the campaign over this period (once)
    # Health (services/period_health.py): sends per second, decayed since `progress_epoch` (epoch
    # seconds of the last progress, so the update is plain arithmetic in SQL on both databases).
    progress_epoch: float | None = None
    recent_rate: float = Field(default=0.0, sa_column_kwargs={"server_default": "0"})
    failures: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))  # reason -> count, examples
    redispatched_at: datetime | None = None  # the sweeper last handed its work out again
    # Waves (campaigns/waves.py): the campaign's setting as the period started, the wave being
    # planned, and when the next wave may be planned (set once wave 1 is claimed, cleared when
    # wave 2 starts): fixed at the start, so a change of the setting never splits a period oddly.
    waves: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    wave: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    next_wave_at: datetime | None = None
    # customers whose `timezone` attribute named no known zone: sent in the campaign's (send windows)
    timezone_fallbacks: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # targeted customers left out at the frequency cap, by the campaign that holds them: {"id": n}
    lost_to: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class SendChunk(SQLModel, table=True):
    """A slice of a period's ledger (a range of send ids) that one worker delivers at a time.

    A worker takes a chunk by leasing it; the lease is renewed while it works, so a chunk whose
    worker died is taken over once the lease runs out, and never by two workers at once.
    """

    __tablename__ = "send_chunk"
    __table_args__ = (UniqueConstraint("period_id", "number"),)
    id: int | None = Field(default=None, primary_key=True)
    period_id: int = Field(foreign_key="send_period.id", index=True)
    number: int
    first_send_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_send_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    status: str = Field(default=ChunkStatus.PENDING)
    lease_until: datetime | None = None
    holder: str | None = None  # "host/pid-namespace:pid" of the process holding the lease
    attempts: int = 0
    sent: int = 0
    failed: int = 0
    updated_at: datetime = Field(default_factory=utcnow)
    # send windows: not delivered before this; the window's label; how many sends the range holds
    release_at: datetime | None = None
    window: str | None = None
    size: int | None = None


class AllocationSnapshot(SQLModel, table=True):
    """What the model decided for one segment in one period, and from what. Never overwritten."""

    __tablename__ = "allocation_snapshot"
    __table_args__ = (UniqueConstraint("period_id", "segment_id", "wave"),)
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    period_id: int = Field(foreign_key="send_period.id")
    segment_id: int = Field(foreign_key="segment.id")
    version: int  # the period number
    seed: int = Field(sa_column=Column(BigInteger, nullable=False))  # 32-bit unsigned seeds
    stage: str
    reason: str | None = None
    holdout_share: float
    arms: list = Field(sa_column=Column(JSON, nullable=False))  # eligible arm indices
    weights: list = Field(sa_column=Column(JSON, nullable=False))  # aligned with `arms`
    p_best: list = Field(sa_column=Column(JSON, nullable=False))
    counts: dict = Field(sa_column=Column(JSON, nullable=False))  # sends/clicks/conversions/revenue
    diagnostics: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    claimed_at: datetime | None = None  # this segment's customers are in the ledger
    wave: int = Field(default=1, sa_column_kwargs={"server_default": "1"})  # the period's wave (campaigns/waves.py)
    assigned: int | None = None  # customers this snapshot assigned (bandit and holdout), once claimed


class Send(SQLModel, table=True):
    """The send ledger. arm = -1 is the holdout (control) group, which gets the baseline message."""

    # Few indexes on purpose: every ledger row is written once by the claim and updated once by
    # delivery, 12M times a period. The unique (period, customer) serves every per-period and
    # per-campaign read (through the campaign's period ids); customer_id serves attribution and the
    # frequency cap (through the recent periods' ids). No index covers status or sent_at, so
    # PostgreSQL can update a delivered row in place (HOT), and fillfactor 35 (migration 0010) leaves
    # the room on each page for that.
    __table_args__ = (
        UniqueConstraint("period_id", "customer_id"),
        Index("ix_send_customer_id", "customer_id"),
        {"postgresql_with": {"fillfactor": 35}},
    )
    id: int | None = Field(default=None, sa_column=Column(BigInteger().with_variant(
        Integer, "sqlite"), primary_key=True, autoincrement=True))
    # No foreign keys either: their checks (four lookups per row) cost several times the claim's
    # COPY itself. Every claim writes ids it read in the same transaction (the period row locked,
    # the customers selected), and the service never deletes campaigns, periods, segments or
    # customers (erasure anonymises a customer in place).
    campaign_id: int
    period_id: int
    customer_id: int
    segment_id: int
    arm: int
    propensity: float
    status: str = Field(default=SendStatus.QUEUED)
    error: str | None = None
    message_id: str | None = None
    sent_at: datetime | None = None
    clicks: int = 0
    first_click_at: datetime | None = None
    conversions: int = 0
    first_conversion_at: datetime | None = None
    revenue: float = 0.0


class Event(SQLModel, table=True):
    """Every feedback event, deduplicated by its id; unattributable and excluded ones are kept and
    counted. Only `applied` clicks and conversions are folded into the send ledger."""

    # Partial index of migration 0006: the auto-pause guard reads unsubscribes and complaints per
    # campaign every minute; clicks and conversions, nearly all rows, stay out of it.
    __table_args__ = (
        Index("ix_event_negative_feedback", "campaign_id",
              postgresql_where=text("type IN ('unsubscribe', 'complaint')"),
              sqlite_where=text("type IN ('unsubscribe', 'complaint')")),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger().with_variant(
        Integer, "sqlite"), primary_key=True, autoincrement=True))
    event_id: str = Field(unique=True)
    type: str
    status: str
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id", index=True)
    send_id: int | None = Field(default=None, index=True)
    customer_external_id: str | None = None
    revenue: float = 0.0
    occurred_at: datetime
    received_at: datetime = Field(default_factory=utcnow)
    reason: str | None = None  # why excluded: "bot:fast", "bot:user_agent", "bot:burst"
    user_agent: str | None = None  # of a tracked click (truncated at the edge)
    link: int | None = None  # which link of the email was clicked: 0 the landing URL, N the N-th literal link


class ModelAction(SQLModel, table=True):
    """A manual decision about one segment's allocation: promote an arm, pin an earlier snapshot's
    weights (rollback), uniform, or resume learning. Append-only: the latest row per (campaign,
    segment) is the segment's mode; the rows in order are the campaign's model-version timeline."""

    __tablename__ = "model_action"
    __table_args__ = (Index("ix_model_action_campaign_segment", "campaign_id", "segment_id"),)
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id")
    segment_id: int = Field(foreign_key="segment.id")
    action: str  # promote | rollback | uniform | resume
    arm: int | None = None  # promote: the arm sent to everyone outside the holdout
    pinned_period: int | None = None  # rollback: the period number whose snapshot's weights are used
    reason: str
    key_name: str  # who: the API key's name and role at the time of the action
    key_role: str
    created_at: datetime = Field(default_factory=utcnow)


class IdempotencyKey(SQLModel, table=True):
    """The first answer to an `Idempotency-Key` of one API key, kept 24 hours. Inserted and filled in
    the transaction of the work itself: a committed row always has its work committed, and the
    unique key makes a concurrent second request wait for the first one's commit (or rollback)."""

    __tablename__ = "idempotency_key"
    __table_args__ = (UniqueConstraint("api_key_id", "key"),)
    id: int | None = Field(default=None, primary_key=True)
    api_key_id: int = Field(foreign_key="api_key.id")
    key: str = Field(max_length=255)
    request_hash: str  # sha256 of method, path and raw body
    status: str  # in_progress | completed
    response_status: int | None = None
    response_body: str | None = None
    response_headers: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, index=True)


class ReportSnapshot(SQLModel, table=True):
    """A campaign's latest lift report, computed once and served as is while nothing it reads has
    changed (`mark`, a fingerprint of those inputs: services/report_store.py). One row per campaign."""

    __tablename__ = "report_snapshot"
    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True)
    mark: str
    computed_at: datetime  # when the consistent snapshot it was computed from was taken
    compute_seconds: float
    report: str  # the report's JSON, exactly as the API serves it


class AuditLog(SQLModel, table=True):
    """Who did what through the API: every successful mutating call (in the transaction of the work
    itself, so a rolled-back request leaves no success entry), every read of one customer's personal
    data, and every refusal of a known key (403 wrong role, 401 revoked key; in a transaction of its
    own). Never a request body: it can hold personal data. Customers are named by internal id only."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_object", "object_type", "object_id"),
        Index("ix_audit_log_key_id", "key_id"),
    )
    id: int | None = Field(default=None, sa_column=Column(BigInteger().with_variant(
        Integer, "sqlite"), primary_key=True, autoincrement=True))
    created_at: datetime = Field(default_factory=utcnow, index=True)
    key_id: int | None = None  # no foreign key: an entry outlives anything it names
    key_name: str | None = None  # the key's name and role at the time of the call
    key_role: str | None = None
    action: str  # method and route template, e.g. "POST /campaigns/{campaign_id}/start"
    object_type: str | None = None  # campaign, api_key, segment, customer, order, event
    object_id: int | None = None  # from the path, or the id the call created
    status_code: int
    outcome: str  # success | refused
    request_id: str | None = None
    detail: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


# Erasure finds a customer's events by external id (conversions posted by customer id, unsubscribes).
# Partial: tracked clicks, nearly all rows, carry no external id and stay out of it.
Index(
    "ix_event_customer_external_id", Event.__table__.c.customer_external_id,
    postgresql_where=text("customer_external_id IS NOT NULL"),
    sqlite_where=text("customer_external_id IS NOT NULL"),
)
