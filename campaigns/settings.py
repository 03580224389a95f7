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

    send_chunk_size: int = Field(5_000, ge=100, description="Customers per send transaction.")
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
