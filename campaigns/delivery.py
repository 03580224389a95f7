"""Delivery backends: where a rendered email leaves the system.

The outbox backend names each file after the send id, so redelivering a send after a crash
overwrites the same file instead of mailing twice.
"""

import os
import smtplib
from pathlib import Path
from typing import Protocol

from campaigns.rendering import OutgoingEmail
from campaigns.settings import Settings


class DeliveryError(Exception):
    def __init__(self, message: str, permanent: bool):
        super().__init__(message)
        self.permanent = permanent


class Backend(Protocol):
    def deliver(self, send_id: int, message: OutgoingEmail) -> None: ...
    def close(self) -> None: ...


class OutboxBackend:
    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def deliver(self, send_id: int, message: OutgoingEmail) -> None:
        final = self.directory / f"{send_id}.eml"
        tmp = final.with_suffix(".tmp")
        tmp.write_bytes(message.raw)
        os.replace(tmp, final)  # atomic: a reader never sees half an email

    def close(self) -> None:
        pass


class SmtpBackend:
    """One SMTP connection reused for a whole chunk of sends."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._conn: smtplib.SMTP | None = None

    def _connection(self) -> smtplib.SMTP:
        if self._conn is None:
            s = self.settings
            conn = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=30)
            if s.smtp_starttls:
                conn.starttls()
            if s.smtp_username:
                conn.login(s.smtp_username, s.smtp_password)
            self._conn = conn
        return self._conn

    def deliver(self, send_id: int, message: OutgoingEmail) -> None:
        try:
            self._connection().sendmail(message.sender, [message.to], message.raw)
        except smtplib.SMTPResponseException as exc:
            permanent = 500 <= exc.smtp_code < 600
            if not permanent:
                self.close()
            raise DeliveryError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", permanent) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"recipient refused: {exc.recipients}", permanent=True) from exc
        except (smtplib.SMTPException, OSError) as exc:
            self.close()
            raise DeliveryError(f"SMTP unavailable: {exc}", permanent=False) from exc

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.quit()
            except (smtplib.SMTPException, OSError):
                pass
            self._conn = None


def make_backend(settings: Settings, outbox_subdir: str = "") -> Backend:
    if settings.delivery_backend == "smtp":
        return SmtpBackend(settings)
    if settings.delivery_backend == "outbox":
        return OutboxBackend(settings.outbox_dir / outbox_subdir)
    raise ValueError(f"MAB_DELIVERY_BACKEND must be 'outbox' or 'smtp', not {settings.delivery_backend!r}")
