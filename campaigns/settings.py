"""The one settings object. Every knob is an environment variable prefixed `MAB_`."""

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The repository root: templates/ and alembic/ live beside the packages (editable install).
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAB_", env_file=".env", extra="ignore")

    var_dir: Path = Field(Path("var"), description="Where the embedded defaults keep their state.")
    database_url: str = Field("", description="SQLAlchemy URL; default: SQLite file var/mab.db.")
    redis_url: str = Field("", description="Broker URL; empty: `mab up` starts a private redis-server.")

    delivery_backend: str = Field("outbox", description="`outbox` (.eml files) or `smtp`.")
    outbox_dir: Path = Field(Path("var/outbox"), description="Where the outbox backend writes .eml files.")
    outbox_retention_days: float = Field(
        14.0, ge=0, description="Outbox .eml files older than this are deleted by beat, hourly (0: kept forever)."
    )
    log_max_bytes: int = Field(
        50_000_000, ge=0,
        description="A log file under var/logs (`mab up`) past this size is moved to `<name>.1` "
                    "(replacing the previous one) and started afresh, hourly (0: never).",
    )
    smtp_host: str = Field("127.0.0.1", description="SMTP relay host (delivery backend `smtp`).")
    smtp_port: int = Field(25, ge=1, le=65535, description="SMTP relay port.")
    smtp_username: str = Field("", description="SMTP login (empty: no AUTH).")
    smtp_password: str = Field("", description="SMTP password (with smtp_username).")
    smtp_starttls: bool = Field(False, description="Upgrade the SMTP connection with STARTTLS.")
    mail_from: str = Field(
        "MAB Campaigns <news@example.com>",
        description="From header and envelope sender; its domain names Message-IDs and the default unsubscribe mailto.",
    )
    dkim_keys: str = Field(
        "", description="Comma-separated `selector=/path/to/private-key.pem` DKIM keys (RSA of 2048+ bits or "
        "Ed25519); each signs every message (one of each: dual signing). Empty: messages leave unsigned.")
    dkim_next_keys: str = Field(
        "", description="Keys published ahead of a rotation, same format: `mab check-domain` prints their DNS "
        "records; they sign nothing until moved into MAB_DKIM_KEYS.")
    dkim_domain: str = Field("", description="The DKIM signing domain (d=); default: the domain of MAB_MAIL_FROM.")

    public_base_url: str = Field(
        "http://127.0.0.1:8000", description="Base of unsubscribe and tracking links in emails."
    )
    signing_secret: str = Field(
        "dev-only-signing-secret-change-me",
        description="HMAC key for tracking and unsubscribe tokens. Set it in production.",
    )
    signing_previous_secrets: str = Field(
        "", description="Comma-separated earlier signing secrets still accepted when verifying links, so "
        "rotating MAB_SIGNING_SECRET breaks no link already mailed. Tokens carry no date: keep an old "
        "secret here for as long as its emails' links should work (e.g. the attribution window plus a "
        "few weeks).")

    send_chunk_size: int = Field(
        5_000, ge=10, description="Customers per chunk: the unit of work one worker takes from a period."
    )
    send_commit_every: int = Field(
        500, ge=1, description="Sends per commit inside a chunk (outbox). A crash redelivers at most this many."
    )
    smtp_commit_every: int = Field(
        20, ge=1, description="Sends per commit with SMTP: the most a hard crash can mail twice."
    )
    chunk_lease_seconds: float = Field(
        120.0, gt=0, description="How long a worker holds a chunk without progress before another may take it."
    )
    broker_visibility_timeout: int = Field(
        3600, ge=5, description="Seconds before Redis redelivers an unacknowledged task (a dead worker's)."
    )
    frequency_cap: int = Field(0, ge=0, description="Marketing emails per customer per window, all campaigns (0: off).")
    frequency_window_days: float = Field(7.0, gt=0, description="The rolling window of the frequency cap, in days.")
    click_latency_hours: float = Field(
        3.0, gt=0, le=24 * 30,
        description="Median hours from delivery to a click. A send not clicked yet counts to the engine as a "
        "fraction of a failure, age / (age + this) (docs/how-it-works/engine.md, delayed feedback).")
    conversion_latency_hours: float = Field(
        24.0, gt=0, le=24 * 90,
        description="Median hours from delivery to a conversion, used the same way for clicked sends that have "
        "not converted yet.")
    max_message_bytes: int = Field(1_000_000, ge=1_000, description="A rendered email larger than this fails.")
    render_timeout_seconds: float = Field(2.0, gt=0, description="Per-message rendering time cap.")
    smtp_rate_per_second: float = Field(0.0, ge=0, description="Messages per second per worker (0: unlimited).")
    smtp_max_attempts: int = Field(4, ge=1, description="Tries per message on a temporary (4xx) SMTP failure.")
    smtp_pacing: dict[str, dict] = Field(
        default_factory=lambda: {
            "gmail": {"domains": ["gmail.com", "googlemail.com"], "per_minute": 0, "connections": 0},
            "yahoo": {"domains": ["yahoo.com", "aol.com", "ymail.com"], "per_minute": 0, "connections": 0},
            "microsoft": {"domains": ["outlook.com", "hotmail.com", "live.com", "msn.com"], "per_minute": 0,
                          "connections": 0},
            "others": {"domains": [], "per_minute": 0, "connections": 0},
        },
        description="Recipient domain groups for SMTP pacing (JSON): group -> {domains, per_minute (messages "
        "per minute across all workers, 0: unlimited), connections (SMTP connections open at once across all "
        "workers, 0: unlimited)}. A domain in no group belongs to `others`.")
    @field_validator("smtp_pacing")
    @classmethod
    def _pacing_limits_are_counts(cls, groups: dict[str, dict]) -> dict[str, dict]:
        for name, spec in groups.items():
            for key in ("per_minute", "connections"):
                value = spec.get(key, 0)
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"{name}.{key} must be a whole number, 0 or more (0: unlimited), not {value!r}")
        return groups

    smtp_backoff_seconds: float = Field(
        30.0, gt=0, description="First back-off of a domain group the server defers (421, 4.7.x); doubles "
        "with each deferral in a row.")
    smtp_backoff_max_seconds: float = Field(600.0, gt=0, description="The longest back-off of a domain group.")
    smtp_connection_lease_seconds: float = Field(
        120.0, gt=0, description="How long a domain group's connection slot (`connections` in MAB_SMTP_PACING) "
        "stays taken without use: renewed while its connection sends, freed when it closes, and after this "
        "long when its worker died.")
    soft_bounce_periods: int = Field(
        3, ge=0, description="Suppress a customer (status bounced) once this many of their sends in a row were "
        "deferred (4xx) through every SMTP attempt (0: never). A hard bounce (5.1.x) suppresses at once.")
    inbound_dir: Path = Field(
        Path("var/inbound"), description="Where `mab inbound` keeps the reports it could not parse (unparseable/) "
        "or match to a send (unmatched/), one .eml file each.")
    unsubscribe_mailto: str = Field(
        "", description="mailto address in List-Unsubscribe (default unsubscribe@<from domain>)."
    )
    beat_interval_seconds: float = Field(30.0, gt=0, description="How often beat looks for due periods.")
    max_events_per_request: int = Field(10_000, ge=1, description="Events per POST /events request.")
    api_workers: int = Field(
        1, ge=1, le=64, description="API processes `mab up` starts (uvicorn --workers); the compose file sets its own."
    )
    click_fold_batch: int = Field(
        5_000, ge=1, le=100_000, description="Clicks per transaction when workers fold the click stream."
    )
    click_claim_idle_seconds: float = Field(
        120.0, gt=0, description="Seconds before clicks read by a worker that never folded them are folded by another."
    )
    click_sweep_seconds: float = Field(
        30.0, gt=0, description="How often beat folds the click stream (clicks normally schedule their own fold)."
    )
    max_customers_per_request: int = Field(1_000_000, ge=1, description="Row cap of one import call.")
    max_variants_per_campaign: int = Field(
        2_000, ge=1, description="Variants (the factor grid minus exclusions) per campaign."
    )

    # Behavioural (RFM) segmentation thresholds, see the manual: docs/marketer/customers.md.
    rfm_recent_days: int = 60
    rfm_frequent_orders: int = 4
    rfm_high_spend: float = 200.0
    rfm_lookback_days: int = 365

    # Feedback in (docs/marketer/feedback.md). Conversion webhook: HMAC-SHA256 over "<timestamp>." + raw body. A list so
    # a secret rotates without downtime: add the new one, switch the sender, remove the old one.
    webhook_secrets: str = Field(
        "", description="Comma-separated webhook secrets; the first signs, every one verifies. Empty: webhook off."
    )
    webhook_tolerance_seconds: int = Field(
        300, ge=1, description="Max age (either way) of X-MAB-Timestamp; a signature is refused twice within it."
    )
    webhook_max_body_bytes: int = Field(
        10_000_000, ge=1_000, description="Larger webhook bodies are refused (413) before any work."
    )
    mailgun_signing_key: str = Field(
        "", description="Mailgun's HTTP webhook signing key: POST /webhooks/esp/mailgun verifies each event's "
        "HMAC with it. Empty: that webhook is off (503).")
    sendgrid_verification_key: str = Field(
        "", description="SendGrid's Event Webhook verification key (base64, as SendGrid shows it): POST "
        "/webhooks/esp/sendgrid verifies each request's ECDSA signature with it. Empty: that webhook is off (503).")
    postmark_webhook_auth: str = Field(
        "", description="`user:password` of the basic auth put in Postmark's webhook URL: POST "
        "/webhooks/esp/postmark requires it. Empty: that webhook is off (503).")
    verp_address: str = Field(
        "", description="Bounce address for VERP return paths: each send's envelope sender becomes "
        "`local+bounce.<send id>.<mac>@domain` and `mab inbound` matches a bounce by it before the Message-ID. "
        "Empty: the envelope sender is MAB_MAIL_FROM's address.")
    inbound_maildir: str = Field(
        "", description="A Maildir that receives bounce and feedback-loop reports (the VERP or bounce "
        "address's mailbox): beat processes each message in new/ once and moves it to cur/. Empty: not polled.")
    inbound_pop3_url: str = Field(
        "", description="A POP3 mailbox of bounce and feedback-loop reports, `pop3://user:password@host:port` "
        "or `pop3s://…`: beat processes each message and deletes it. Empty: not polled.")
    inbound_poll_seconds: float = Field(
        60.0, gt=0, description="How often beat polls MAB_INBOUND_MAILDIR.")
    ses_topic_arns: str = Field(
        "", description="Comma-separated ARNs of the SNS topics SES notifies: POST /webhooks/esp/ses accepts "
        "SNS-signed messages of these topics only. Empty: that webhook is off (503).")
    sns_certificate_dir: Path | None = Field(
        None, description="Where SNS signing certificates are kept once fetched; an operator may put them there "
        "for a host that cannot reach AWS (file name: the SHA-256 hex of the SigningCertURL, then .pem).")
    max_conversion_rows_per_request: int = Field(
        1_000_000, ge=1, description="Row cap of one POST /events/conversions.csv."
    )
    # Bot and scanner clicks are stored as `excluded` with a reason and never rewarded. Each rule is
    # off at 0 / empty. See docs/marketer/feedback.md.
    bot_min_seconds_after_send: float = Field(
        10.0, ge=0, description="A click this soon after the send's delivery is a link scanner's."
    )
    bot_user_agents: str = Field(
        "bot,crawl,spider,scanner,slurp,Barracuda,Proofpoint,Mimecast,MessageLabs,Symantec,TrendMicro,"
        "Trend Micro,Sophos,FireEye,IronPort,Forcepoint,Fortinet,ZScaler,SafeLinks,Microsoft Office Protocol,"
        "python-requests,python-urllib,aiohttp,httpx,curl/,Wget,Go-http-client,Java/,okhttp,Apache-HttpClient,"
        "libwww-perl,node-fetch,axios/,Scrapy,HeadlessChrome,PhantomJS,facebookexternalhit,WhatsApp,"
        "SkypeUriPreview,Google-Safety",
        description="Comma-separated user-agent fragments (case-insensitive) of scanners and bots.",
    )
    bot_burst_links: int = Field(
        3, ge=0, description="Clicks on this many distinct links of one send within the burst window: a scanner."
    )
    bot_burst_seconds: float = Field(5.0, ge=0, description="The burst window, seconds.")

    # Monitoring: logs, metrics and the auto-pause guard (docs/operator/monitoring.md).
    log_format: Literal["json", "text"] = Field(
        "json", description="`json`: one JSON object per line (time, level, logger, message, context); `text`."
    )
    log_level: str = Field("INFO", description="Level of the API, worker, beat and CLI logs.")
    log_requests: bool = Field(True, description="Log one line per HTTP request (route template, status, ms).")
    metrics_require_key: bool = Field(
        False, description="GET /metrics needs an admin X-API-Key (default: open, as scrapers send none)."
    )
    worker_metrics_port: int = Field(
        0, ge=0, le=65535, description="A Celery worker's own /metrics port, for workers on other hosts (0: off)."
    )
    guard_unsubscribe_rate: float = Field(
        0.01, ge=0, le=1, description="Pause a campaign when a period's unsubscribes / sends exceed this (0: off)."
    )
    guard_complaint_rate: float = Field(
        0.001, ge=0, le=1, description="Pause a campaign when a period's complaints / sends exceed this (0: off)."
    )
    guard_min_sends: int = Field(500, ge=1, description="The guard judges only periods with at least this many sends.")
    guard_lookback_days: float = Field(
        7.0, gt=0, description="The guard watches periods running or finished within this many days."
    )
    guard_interval_seconds: float = Field(60.0, gt=0, description="How often beat runs the guard.")
    failure_halt_share: float = Field(
        0.05, ge=0, le=1, description="Halt a period and pause its campaign when more than this share of the sends "
        "tried so far failed (suppressions at send time do not count; 0: never halt).")
    failure_halt_min_tried: int = Field(
        200, ge=1, description="A period's failure share is judged once at least this many of its sends were tried.")
    sweep_interval_seconds: float = Field(
        30.0, gt=0, description="How often beat's sweeper looks for work a lost task left behind (queued periods, "
        "chunks whose lease ran out, stalled plans) and dispatches it again.")

    # Bounds and idempotency (docs/reference/errors.md). A rate limit of 0 is off.
    idempotency_ttl_hours: float = Field(
        24.0, gt=0, description="How long an Idempotency-Key's first response is replayed; older keys are forgotten."
    )
    rate_limit_ingest_per_minute: int = Field(
        6_000, ge=0, description="Requests per API key per minute to POST /events and /events/conversions.csv (0: off)."
    )
    rate_limit_mutations_per_minute: int = Field(
        1_200, ge=0, description="POST/PUT/PATCH/DELETE requests per API key per minute, other routes (0: off)."
    )
    rate_limit_webhook_per_minute: int = Field(
        6_000, ge=0, description="Requests per source IP per minute to POST /webhooks/conversions (0: off)."
    )
    rate_limit_redis_timeout_seconds: float = Field(
        0.5, gt=0, le=10, description="How long a request waits for Redis to count it; past that the limits are off "
        "for 5 s (fail open, with a warning) so a hung Redis never stalls the API."
    )
    max_body_bytes: int = Field(
        20_000_000, ge=1_000, description="Larger request bodies (JSON and all but the CSV imports) are refused (413)."
    )
    max_csv_bytes: int = Field(
        1_000_000_000, ge=1_000,
        description="Larger bodies of POST /customers/csv and /events/conversions.csv are refused (413).",
    )
    default_page_size: int = Field(100, ge=1, description="Items per page of a list when the request gives no `limit`.")
    max_page_size: int = Field(1_000, ge=1, description="The largest `limit` a list accepts (422 above).")
    max_template_bytes: int = Field(
        100_000, ge=100, description="UTF-8 bytes per template part (subject, html, text); larger is refused (422)."
    )
    report_sequential_tuning_sends: int = Field(
        50_000, ge=100,
        description="Sends (holdout and bandit) at which the report's anytime-valid interval is tightest.",
    )
    report_projection_periods: int = Field(
        52, ge=1, description="Periods the report's business projection extrapolates to (52 weekly periods: a year).",
    )
    report_refresh_seconds: float = Field(
        30.0, gt=0, description="How often beat recomputes the stored reports that fell behind their data (a "
        "report is recomputed at most every 10 x its own compute time)."
    )
    report_max_behind_seconds: float = Field(
        900.0, ge=0, description="A stored report behind its data is served (marked `behind`) while younger than "
        "this; an older one is recomputed on the read (0: always recompute a report that is behind)."
    )

    def resolved_database_url(self) -> str:
        """MAB_DATABASE_URL; else the database of the `mab up` running in this folder; else SQLite."""
        if self.database_url:
            return self.database_url
        return self.running_stack().get("database_url") or f"sqlite:///{(self.var_dir / 'mab.db').resolve()}"

    def broker_url(self) -> str:
        """MAB_REDIS_URL; else the broker of the `mab up` running in this folder (its private
        redis-server listens on a port of its own); else Redis's default port."""
        return self.redis_url or self.running_stack().get("redis_url") or "redis://127.0.0.1:6379/0"

    def running_stack(self) -> dict:
        """What `mab up` recorded in var/stack.json, while that `mab up` is alive (campaigns/stack.py)."""
        try:
            recorded = json.loads((self.var_dir / STACK_FILE).read_text())
            os.kill(int(recorded["pid"]), 0)  # signal 0: only asks whether the process exists
        except (OSError, ValueError, KeyError, TypeError):
            return {}
        return recorded


STACK_FILE = "stack.json"


@lru_cache
def get_settings() -> Settings:
    return Settings()
