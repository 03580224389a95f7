"""Delivery backends: where a rendered email leaves the system.

The outbox backend names each file after the send id, so redelivering a send after a crash
overwrites the same file instead of mailing twice.
"""

import os
import smtplib
import uuid
from pathlib import Path
from typing import Protocol

from campaigns.rendering import OutgoingEmail
from campaigns.settings import Settings


class DeliveryError(Exception):
    """permanent: the server refused for good (5xx). connection_lost: nothing can be sent until the
    server is back, so the chunk stops; otherwise a temporary refusal concerns this message only."""

    def __init__(self, message: str, permanent: bool, connection_lost: bool = False, code: int | None = None,
                 deferred: bool = False, recipient_stage: bool = False):
        super().__init__(message)
        self.permanent = permanent
        self.connection_lost = connection_lost
        self.code = code  # the SMTP reply code, when the server answered (campaigns/services/bounces.py)
        self.deferred = deferred  # temporary refusals that persisted through every attempt
        # the answer to this message's RCPT or DATA (not to connecting): a deferral there is the
        # recipient's provider throttling us (campaigns/pacing.py)
        self.recipient_stage = recipient_stage


class Backend(Protocol):
    def deliver(self, send_id: int, message: OutgoingEmail) -> None: ...
    def close(self) -> None: ...


class OutboxBackend:
    """One `.eml` file per send, named by the send id, written under a temporary name and renamed
    into place (atomic: a reader never sees half an email). Both calls name the file relative to
    the directory, held open (one path component to resolve instead of the whole path, twice). The
    temporary name is one per backend (a backend serves one chunk at a time, in one process), so
    12M sends leave no 12M stale names in the directory cache, and a crash leaves at most one
    `.tmp` file per worker."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._dir_fd: int | None = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        self._tmp = f".{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp"

    def deliver(self, send_id: int, message: OutgoingEmail) -> None:
        tmp, dir_fd = self._tmp, self._dir_fd  # plain strings and os calls: a hot path
        if dir_fd is None:
            raise RuntimeError("the outbox backend is closed")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dir_fd)
        try:
            data = memoryview(message.raw)
            while data:  # a regular file takes it all at once; loop anyway rather than assume
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)
        os.replace(tmp, f"{send_id}.eml", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    def close(self) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None


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
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            self._after_refusal(codes)
            raise DeliveryError(f"recipient refused: {exc.recipients}", permanent=all(c >= 500 for c in codes),
                                connection_lost=421 in codes, code=min(codes),
                                recipient_stage=True) from exc
        except smtplib.SMTPResponseException as exc:
            self._after_refusal([exc.smtp_code])
            raise DeliveryError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", permanent=exc.smtp_code >= 500,
                                connection_lost=exc.smtp_code == 421, code=exc.smtp_code,
                                recipient_stage=isinstance(exc, smtplib.SMTPDataError)) from exc
        except (smtplib.SMTPException, OSError) as exc:
            self.close()
            raise DeliveryError(f"SMTP unavailable: {exc}", permanent=False, connection_lost=True) from exc

    def _after_refusal(self, codes: list[int]) -> None:
        # 421 means the server is closing the connection (smtplib has already closed its socket):
        # forget it so the next message reconnects. Other refusals leave a healthy connection.
        if 421 in codes:
            self._conn = None

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
