"""Delivery backends: where a rendered email leaves the system.

The outbox backend names each file after the send id, so redelivering a send after a crash
overwrites the same file instead of mailing twice.
"""

import os
import smtplib
import uuid
from pathlib import Path
from typing import Protocol

from campaigns import pacing
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
    """SMTP connections reused for a whole chunk of sends: one for every recipient domain group whose
    connections are capped (`connections` in MAB_SMTP_PACING, a cap shared by every worker through the
    pacer, campaigns/pacing.py: ask `connection_wait(group)` before each message), one for the rest."""

    def __init__(self, settings: Settings, pacer=None):
        self.settings = settings
        self.pacer = pacer
        self._conns: dict[str, smtplib.SMTP] = {}  # capped domain group, or "" for all others -> connection
        self._slots: dict[str, float] = {}  # capped group -> when this backend last took or renewed its slot
        self._token = f"{os.getpid()}-{uuid.uuid4().hex}"  # this backend's name in the groups' semaphores

    def group(self, address: str) -> str:
        return self.pacer.group(address) if self.pacer is not None else ""

    def connection_wait(self, group: str) -> float:
        """0 when a message of `group` may go now: the group is not capped, or this backend holds one
        of its slots (renewed once a third of the lease has passed) or just took a free one. Else the
        seconds until it is worth asking again."""
        if self.pacer is None or not self.pacer.connection_limit(group):
            return 0.0
        now = self.pacer.clock()
        taken = self._slots.get(group)
        if taken is not None and now - taken < self.pacer.connection_lease / 3:
            return 0.0
        if self.pacer.acquire_connection(group, self._token):
            self._slots[group] = now
            return 0.0
        # the slot was lost (its lease ran out while this backend waited) or never held: no connection
        self._close_group(group)
        return pacing.CONNECTION_RETRY_SECONDS

    def _connection(self, group: str) -> smtplib.SMTP:
        conn = self._conns.get(group)
        if conn is None:
            if self.pacer is not None and self.pacer.connection_limit(group) and group not in self._slots:
                raise RuntimeError(f"no connection slot of {group!r}: ask connection_wait() first")
            s = self.settings
            conn = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=30)
            if s.smtp_starttls:
                conn.starttls()
            if s.smtp_username:
                conn.login(s.smtp_username, s.smtp_password)
            self._conns[group] = conn
        return conn

    def deliver(self, send_id: int, message: OutgoingEmail) -> None:
        group = self.group(message.to)
        if self.pacer is None or not self.pacer.connection_limit(group):
            group = ""  # the groups with no cap share one connection
        try:
            self._connection(group).sendmail(message.sender, [message.to], message.raw)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            self._after_refusal(group, codes)
            raise DeliveryError(f"recipient refused: {exc.recipients}", permanent=all(c >= 500 for c in codes),
                                connection_lost=421 in codes, code=min(codes),
                                recipient_stage=True) from exc
        except smtplib.SMTPResponseException as exc:
            self._after_refusal(group, [exc.smtp_code])
            raise DeliveryError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", permanent=exc.smtp_code >= 500,
                                connection_lost=exc.smtp_code == 421, code=exc.smtp_code,
                                recipient_stage=isinstance(exc, smtplib.SMTPDataError)) from exc
        except (smtplib.SMTPException, OSError) as exc:
            self.close()
            raise DeliveryError(f"SMTP unavailable: {exc}", permanent=False, connection_lost=True) from exc

    def _after_refusal(self, group: str, codes: list[int]) -> None:
        # 421 means the server is closing the connection (smtplib has already closed its socket):
        # forget it so the next message reconnects (on the same slot). Other refusals leave a healthy
        # connection.
        if 421 in codes:
            self._conns.pop(group, None)

    def _close_group(self, group: str) -> None:
        conn = self._conns.pop(group, None)
        if conn is not None:
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                pass
        if self._slots.pop(group, None) is not None:
            self.pacer.release_connection(group, self._token)

    def close(self) -> None:
        for group in set(self._conns) | set(self._slots):
            self._close_group(group)


def make_backend(settings: Settings, outbox_subdir: str = "", pacer=None) -> Backend:
    if settings.delivery_backend == "smtp":
        return SmtpBackend(settings, pacer)
    if settings.delivery_backend == "outbox":
        return OutboxBackend(settings.outbox_dir / outbox_subdir)
    raise ValueError(f"MAB_DELIVERY_BACKEND must be 'outbox' or 'smtp', not {settings.delivery_backend!r}")
