"""Per-domain pacing of SMTP delivery: messages per minute per recipient domain group, and an
exponential, capped back-off of a group that the receiving provider defers (421, 4.7.x).

Large mailbox providers throttle each sender by rate; a deferral storm from one of them must not
slow mail to the others. A group that is over its rate or in back-off is "not now": its rows stay
`queued` and the chunk goes on with other groups' rows, then comes back for them
(campaigns/services/sending.py). Only queued rows are ever delivered, so nothing is lost and
nothing is sent twice.

Concurrent SMTP connections per group are capped the same way: a connection needs a slot of its
group's semaphore, a Redis sorted set of holders scored by when their slot expires (renewed while the
connection is in use), so a worker that dies holding one frees it after the lease. A group whose slots
are all taken is "not now" too.

The state is shared by every worker through Redis (a fixed one-minute window counter, a back-off key
and a connection semaphore per group); without a reachable Redis (`mab send` with no broker) each
process keeps it locally.
"""

import logging
import time
from datetime import UTC, datetime
from functools import lru_cache

from campaigns import metrics
from campaigns.settings import Settings

log = logging.getLogger(__name__)

OTHERS = "others"
DEFERRAL_CODES = (421,)
CONNECTION_RETRY_SECONDS = 1.0  # how soon a group waiting for a connection slot asks again


def group_of(address: str, groups: dict[str, dict]) -> str:
    domain = address.rsplit("@", 1)[-1].strip().rstrip(">").lower()
    for name, spec in groups.items():
        if domain in spec.get("domains", ()):
            return name
    return OTHERS


def is_deferral(exc) -> bool:
    """A DeliveryError answering this message's RCPT or DATA with 421 (the server throttles us and
    closes) or an enhanced status 4.7.x (a policy deferral). A 421 on connecting is the relay's own
    trouble, not a provider's: the chunk retries as before."""
    code, message = exc.code, str(exc)
    if exc.permanent or not exc.recipient_stage or code is None:
        return False
    return code in DEFERRAL_CODES or (400 <= code < 500 and "4.7." in message)


class _LocalState:
    def __init__(self):
        self.windows: dict[tuple[str, int], int] = {}
        self.backoff: dict[str, tuple[float, int]] = {}  # group -> (until, level)
        self.slots: dict[str, dict[str, float]] = {}  # group -> {holder token: slot expires at}

    def take(self, group: str, minute: int) -> int:
        key = (group, minute)
        self.windows[key] = self.windows.get(key, 0) + 1
        return self.windows[key]

    def backoff_until(self, group: str) -> float:
        return self.backoff.get(group, (0.0, 0))[0]

    def back_off(self, group: str, base: float, cap: float, now: float) -> float:
        until, level = self.backoff.get(group, (0.0, 0))
        level = level + 1 if until > now - cap else 1  # a storm escalates; a quiet spell resets
        delay = min(base * 2 ** (level - 1), cap)
        self.backoff[group] = (now + delay, level)
        return delay

    def clear(self, group: str) -> None:
        self.backoff.pop(group, None)

    def acquire(self, group: str, token: str, limit: int, now: float, lease: float) -> bool:
        holders = self.slots.setdefault(group, {})
        for held, expires in list(holders.items()):
            if expires <= now:
                del holders[held]
        if token in holders or len(holders) < limit:
            holders[token] = now + lease
            return True
        return False

    def release(self, group: str, token: str) -> None:
        self.slots.get(group, {}).pop(token, None)


class _RedisState:
    PREFIX = "mab:pacing:"

    def __init__(self, client):
        self.r = client

    def take(self, group: str, minute: int) -> int:
        key = f"{self.PREFIX}rate:{group}:{minute}"
        pipe = self.r.pipeline()
        pipe.incr(key)
        pipe.expire(key, 120)
        return int(pipe.execute()[0])

    def backoff_until(self, group: str) -> float:
        value = self.r.get(f"{self.PREFIX}backoff:{group}")
        return float(value.split(b":")[0]) if value else 0.0

    def back_off(self, group: str, base: float, cap: float, now: float) -> float:
        key = f"{self.PREFIX}backoff:{group}"
        value = self.r.get(key)
        level = int(value.split(b":")[1]) + 1 if value else 1
        delay = min(base * 2 ** (level - 1), cap)
        # the key outlives the back-off by `cap`, so deferrals in quick succession escalate
        self.r.set(key, f"{now + delay}:{level}", ex=int(delay + cap) + 1)
        return delay

    def clear(self, group: str) -> None:
        self.r.delete(f"{self.PREFIX}backoff:{group}")

    # Expired holders out, then in (or renewed) if already a holder or under the limit: one atomic step,
    # so two workers never both take the last slot.
    ACQUIRE = """
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
    if redis.call('ZSCORE', KEYS[1], ARGV[4]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
      redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
      redis.call('EXPIRE', KEYS[1], ARGV[5])
      return 1
    end
    return 0
    """

    def acquire(self, group: str, token: str, limit: int, now: float, lease: float) -> bool:
        key = f"{self.PREFIX}connections:{group}"
        return bool(self.r.eval(self.ACQUIRE, 1, key, repr(now), repr(now + lease), limit, token,
                                int(lease) + 60))

    def release(self, group: str, token: str) -> None:
        self.r.zrem(f"{self.PREFIX}connections:{group}", token)


def _state_for(settings: Settings):
    url = settings.redis_url or settings.running_stack().get("redis_url")
    if not url:
        return _LocalState(), "local"
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        client.ping()
        return _RedisState(client), "redis"
    except Exception as exc:  # noqa: BLE001 - any broker trouble: pace locally, and say so
        log.warning("pacing: Redis at %s unreachable (%s); pacing per process", url, exc)
        return _LocalState(), "local"


@lru_cache(maxsize=4)
def _reader(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)


def backoffs(settings: Settings, now: float | None = None) -> list[tuple[str, float, int]]:
    """The domain groups backing off now, as every worker sees them through Redis: (group, until
    (epoch seconds), deferrals in a row). Empty without a Redis (nothing is shared to read)."""
    url = settings.redis_url or settings.running_stack().get("redis_url")
    if not url:
        return []
    groups = [*settings.smtp_pacing, *([] if OTHERS in settings.smtp_pacing else [OTHERS])]
    try:
        values = _reader(url).mget([f"{_RedisState.PREFIX}backoff:{g}" for g in groups])
    except Exception as exc:  # noqa: BLE001 - a status read must not fail the request: say so, show none
        log.warning("pacing: cannot read the back-offs from Redis at %s (%s)", url, exc)
        return []
    now = time.time() if now is None else now
    found = []
    for group, value in zip(groups, values, strict=True):
        if value:
            until, level = value.split(b":")
            if float(until) > now:
                found.append((group, float(until), int(level)))
    return found


def backoff_notes(settings: Settings, now: float | None = None) -> list[str]:
    """One sentence per group backing off, for a period's state_reason."""
    notes = []
    for group, until, level in backoffs(settings, now):
        domains = settings.smtp_pacing.get(group, {}).get("domains") or ["every domain in no other group"]
        at = datetime.fromtimestamp(until, UTC)
        notes.append(f"deliveries to {group} ({', '.join(domains)}) deferred by the receiving servers: backing off "
                     f"until {at:%H:%M:%S} UTC after {level} deferral{'s' if level > 1 else ''} in a row "
                     "(its mail waits, queued; other groups go on)")
    return notes


class Pacer:
    """Asked before each message: may this group send now? Told of each deferral."""

    def __init__(self, settings: Settings, state=None, clock=time.time):
        self.groups = settings.smtp_pacing
        self.base = settings.smtp_backoff_seconds
        self.cap = settings.smtp_backoff_max_seconds
        self.connection_lease = settings.smtp_connection_lease_seconds
        self.clock = clock
        self.state, self.where = (state, "given") if state is not None else _state_for(settings)

    def group(self, address: str) -> str:
        return group_of(address, self.groups)

    def wait_for(self, group: str) -> float:
        """0 when a message of `group` may go now (and it is counted against the group's rate);
        else the seconds until the group may send again."""
        now = self.clock()
        until = self.state.backoff_until(group)
        if until > now:
            return until - now
        limit = self.groups.get(group, {}).get("per_minute", 0)
        if limit:
            minute = int(now // 60)
            if self.state.take(group, minute) > limit:
                metrics.observe_pacing_wait(group)
                return 60 * (minute + 1) - now
        return 0.0

    def deferred(self, group: str, reason: str) -> float:
        delay = self.state.back_off(group, self.base, self.cap, self.clock())
        metrics.observe_deferral(group, delay)
        log.warning("pacing: %s deferred (%s); backing off %.1f s", group, reason[:200], delay,
                    extra={"group": group, "backoff_seconds": delay})
        return delay

    def connection_limit(self, group: str) -> int:
        """The most SMTP connections for `group` at once, across all workers (0: no limit)."""
        return int(self.groups.get(group, {}).get("connections", 0) or 0)

    def acquire_connection(self, group: str, token: str) -> bool:
        """Take (or renew) a connection slot of `group` for the holder `token`; False when all are
        taken. A slot expires `smtp_connection_lease_seconds` after it was last taken or renewed."""
        ok = self.state.acquire(group, token, self.connection_limit(group), self.clock(), self.connection_lease)
        if not ok:
            metrics.observe_connection_wait(group)
        return ok

    def release_connection(self, group: str, token: str) -> None:
        self.state.release(group, token)
