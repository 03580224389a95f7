"""The one settings object. Every knob is an environment variable prefixed `MAB_`."""

from functools import lru_cache
from pathlib import Path

from pydantic import Field
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
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False
    mail_from: str = "MAB Campaigns <news@example.com>"

    public_base_url: str = Field(
        "http://127.0.0.1:8000", description="Base of unsubscribe and tracking links in emails."
    )
    signing_secret: str = Field(
        "dev-only-signing-secret-change-me",
        description="HMAC key for tracking and unsubscribe tokens. Set it in production.",
    )

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
    frequency_window_days: float = Field(7.0, gt=0)
    max_message_bytes: int = Field(1_000_000, ge=1_000, description="A rendered email larger than this fails.")
    render_timeout_seconds: float = Field(2.0, gt=0, description="Per-message rendering time cap.")
    smtp_rate_per_second: float = Field(0.0, ge=0, description="Messages per second per worker (0: unlimited).")
    smtp_max_attempts: int = Field(4, ge=1, description="Tries per message on a temporary (4xx) SMTP failure.")
    unsubscribe_mailto: str = Field(
        "", description="mailto address in List-Unsubscribe (default unsubscribe@<from domain>)."
    )
    beat_interval_seconds: float = Field(30.0, gt=0, description="How often beat looks for due periods.")
    max_events_per_request: int = Field(10_000, ge=1)
    max_customers_per_request: int = Field(1_000_000, ge=1, description="Row cap of one import call.")
    max_variants_per_campaign: int = Field(2_000, ge=1)

    # Behavioural (RFM) segmentation thresholds, see README "Segments".
    rfm_recent_days: int = 60
    rfm_frequent_orders: int = 4
    rfm_high_spend: float = 200.0
    rfm_lookback_days: int = 365

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.var_dir / 'mab.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
