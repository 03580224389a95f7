"""A real SMTP server for the tests: aiosmtpd on 127.0.0.1, with a handler that records every
accepted message and can be told to refuse some recipients, fail the first attempts, or die.

    with SmtpServer() as smtp:                     # a free port; smtp.port, smtp.handler
        smtp.handler.refuse("x@example.com", "550 5.1.1 no such user", stage="RCPT")
        smtp.handler.refuse("y@example.com", "451 4.3.0 try again", stage="DATA", times=2)
        ...
        smtp.handler.messages                      # [Received], accepted (250) messages only
"""

import email
import email.policy
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller

from campaigns.stack import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    at: float  # time.monotonic() when the server accepted it

    def parsed(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.raw, policy=email.policy.default)

    @property
    def message_id(self) -> str:
        return self.parsed()["Message-ID"].strip()


@dataclass
class _Rule:
    reply: str
    stage: str  # "RCPT" or "DATA"
    times: int | None  # None: always


@dataclass
class RecordingHandler:
    messages: list[Received] = field(default_factory=list)
    dropped: list[Received] = field(default_factory=list)  # content received, connection cut, never accepted
    connections: int = 0  # EHLO/HELO greetings: one per SMTP session the client opens
    attempts: Counter = field(default_factory=Counter)  # (stage, address) -> times seen
    refused: list[tuple[str, str, str]] = field(default_factory=list)  # (stage, address, reply)
    accept_limit: int | None = None  # after this many accepted messages the server "dies"
    _rules: dict[str, _Rule] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def refuse(self, address: str, reply: str, stage: str = "RCPT", times: int | None = None) -> None:
        """Answer `reply` for `address` at `stage`, on the first `times` attempts (None: always)."""
        assert stage in ("RCPT", "DATA")
        self._rules[address.lower()] = _Rule(reply, stage, times)

    @property
    def dead(self) -> bool:
        return self.accept_limit is not None and len(self.messages) >= self.accept_limit

    def per_recipient(self) -> Counter:
        return Counter(rcpt.lower() for m in self.messages for rcpt in m.rcpt_tos)

    def _rule_reply(self, stage: str, address: str) -> str | None:
        key = address.lower()
        with self._lock:
            self.attempts[(stage, key)] += 1
            rule = self._rules.get(key)
            if rule is None or rule.stage != stage:
                return None
            if rule.times is not None and self.attempts[(stage, key)] > rule.times:
                return None
            self.refused.append((stage, key, rule.reply))
            return rule.reply

    @staticmethod
    def _cut(server) -> str:
        """Drop the connection, like a server that crashed or was switched off."""
        server.transport.abort()
        return "421 4.3.2 going away"

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        if self.dead:
            return [self._cut(server)]
        with self._lock:
            self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_HELO(self, server, session, envelope, hostname):
        if self.dead:
            return self._cut(server)
        with self._lock:
            self.connections += 1
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        # a dead server still lets the message in flight reach DATA, then cuts it: the worst case
        reply = self._rule_reply("RCPT", address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        received = Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content),
                            time.monotonic())
        if self.dead:
            self.dropped.append(received)
            return self._cut(server)
        for rcpt in envelope.rcpt_tos:
            reply = self._rule_reply("DATA", rcpt)
            if reply is not None:
                return reply
        with self._lock:
            self.messages.append(received)
        return "250 OK: queued"


class SmtpServer:
    """aiosmtpd's threaded Controller around a RecordingHandler; a context manager."""

    def __init__(self, port: int | None = None, handler: RecordingHandler | None = None):
        self.port = port or free_port()
        self.handler = handler or RecordingHandler()
        self.controller: Controller | None = None

    def start(self) -> "SmtpServer":
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def __enter__(self) -> "SmtpServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
