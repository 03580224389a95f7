"""Customer and order imports: validated in full, written in bulk, all or nothing per request."""

import csv
import io
import re
from collections.abc import Iterable, Iterator

from pydantic import ValidationError
from sqlmodel import Session

from campaigns import attributes
from campaigns.errors import InvalidInput, NotFound
from campaigns.models import as_utc, utcnow
from campaigns.repositories import customers as repo
from campaigns.schemas import CustomerIn, OrderIn
from campaigns.settings import get_settings

BATCH = 2_000
RESERVED_COLUMNS = {"external_id", "email", "segment", "consent", "lists"}
LIST_SEPARATOR = ";"  # a CSV `lists` cell: `vip;newsletter`
TRUE, FALSE = {"1", "true", "yes", "y"}, {"0", "false", "no", "n"}


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def import_customers(session: Session, customers: Iterable[tuple[str, CustomerIn]]) -> dict:
    """Upsert customers by external id. `customers` yields (where, row) so an error names the row
    (`customers[3]` for JSON, `line 4` for CSV). Any error raises and the caller's transaction
    rolls back: nothing of a bad request is written."""
    segments = repo.segments_by_name(session)
    cap = get_settings().max_customers_per_request
    received = inserted = 0
    seen: set[str] = set()
    emails: dict[str, tuple[str, str]] = {}  # lower-cased address -> (external id, where) in this import
    for batch in _batches(customers, BATCH):
        rows = []
        for where, c in batch:
            received += 1
            if received > cap:
                raise InvalidInput(where, f"too many rows in one request (cap {cap}, MAB_MAX_CUSTOMERS_PER_REQUEST)")
            if c.segment is not None and c.segment not in segments:
                raise InvalidInput(f"{where}.segment", f"no segment named '{c.segment}'")
            if c.external_id in seen:
                raise InvalidInput(f"{where}.external_id", f"'{c.external_id}' appears twice in this import")
            seen.add(c.external_id)
            address = c.email.lower()
            if address in emails:
                other, other_where = emails[address]
                raise InvalidInput(f"{where}.email", f"{c.email} is also the address of '{other}' ({other_where}): "
                                   "one address, one customer")
            emails[address] = (c.external_id, where)
            now = utcnow()
            rows.append(
                {
                    "external_id": c.external_id,
                    "email": c.email,
                    "segment_id": segments.get(c.segment) if c.segment else None,
                    "attributes": c.attributes if c.lists is None else {**c.attributes, "lists": sorted(set(c.lists))},
                    "status": "active",
                    "consent": True if c.consent is None else c.consent,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        _refuse_shared_addresses(session, batch)
        known = repo.existing_customer_ids(session, [r["external_id"] for r in rows])
        inserted += len(rows) - len(known)
        repo.upsert_customers(session, rows)
        explicit = [{"ext": c.external_id, "consent": c.consent} for _, c in batch if c.consent is not None]
        repo.set_consent(session, explicit)
    session.flush()
    return {"received": received, "inserted": inserted, "updated": received - inserted}


def _refuse_shared_addresses(session: Session, batch: list[tuple[str, CustomerIn]]) -> None:
    """One address, one customer: an address already held by another customer (compared without
    case) is refused naming both, since both would otherwise be mailed."""
    owners = repo.external_ids_by_email(session, [c.email.lower() for _, c in batch])
    for where, c in batch:
        other = owners.get(c.email.lower())
        if other is not None and other != c.external_id:
            raise InvalidInput(f"{where}.email", f"{c.email} is already the address of customer '{other}' "
                               f"(not '{c.external_id}'): one address, one customer")


def json_rows(customers: list[CustomerIn]) -> Iterator[tuple[str, CustomerIn]]:
    for i, c in enumerate(customers):
        yield f"customers[{i}]", c


def csv_column_types(lines: Iterable[str]) -> dict[str, str]:
    """First pass over a CSV: each attribute column's type, from its header annotation
    (`loyalty_points:int`) or inferred from every non-empty value (see campaigns.attributes)."""
    reader = CsvRows(lines)
    if reader.fieldnames is None:
        raise InvalidInput("body", "the CSV is empty (expected a header line)")
    names, annotated = _header(reader.fieldnames)
    types = attributes.ColumnTypes(annotated)
    columns = [(raw, name) for raw, name in zip(reader.fieldnames, names, strict=True) if name not in RESERVED_COLUMNS]
    for _, row in reader:
        for raw, name in columns:
            if (value := (row.get(raw) or "").strip()):
                types.see(name, value)
    return types.result()


def _header(header: list[str]) -> tuple[list[str], dict[str, str]]:
    try:
        names, annotated = attributes.parse_header(header)
    except ValueError as exc:
        raise InvalidInput("line 1", str(exc)) from None
    if len(set(names)) != len(names):
        raise InvalidInput("line 1", "a column appears twice")
    for reserved in RESERVED_COLUMNS & set(annotated):
        raise InvalidInput("line 1", f"column '{reserved}' cannot carry a type annotation")
    return names, annotated


def csv_rows(lines: Iterable[str], types: dict[str, str] | None = None) -> Iterator[tuple[str, CustomerIn]]:
    """Parse a CSV stream lazily: columns external_id, email, segment, consent, lists; any other
    column becomes a typed template attribute (`types`, from `csv_column_types`; text without it).
    An empty cell is no attribute at all. The header is line 1; a bad row is named by its line
    number (and column)."""
    reader = CsvRows(lines)
    if reader.fieldnames is None:
        raise InvalidInput("body", "the CSV is empty (expected a header line)")
    names, annotated = _header(reader.fieldnames)
    rename = dict(zip(reader.fieldnames, names, strict=True))
    types = {**annotated, **(types or {})}
    missing = {"external_id", "email"} - set(names)
    if missing:
        raise InvalidInput("line 1", f"missing column(s): {', '.join(sorted(missing))}")
    for where, fields in reader:
        if None in fields:
            raise InvalidInput(where, "more fields than header columns")
        row = {rename[k]: v for k, v in fields.items()}
        try:
            consent = _csv_bool(row.get("consent"))
        except ValueError as exc:
            raise InvalidInput(f"{where}.consent", str(exc)) from None
        attrs = {}
        for name, raw in row.items():
            value = (raw or "").strip()
            if name in RESERVED_COLUMNS or not value:
                continue
            kind = types.get(name, "text")
            if not attributes.fits(kind, value):
                raise InvalidInput(f"{where}.{name}", f"{value[:40]!r} is not a valid {kind} (the column's type)")
            attrs[name] = attributes.convert(kind, value) if kind != "text" else raw
        lists = row.get("lists")
        try:
            yield where, CustomerIn(
                external_id=row.get("external_id"),
                email=row.get("email"),
                segment=row.get("segment") or None,
                consent=consent,
                attributes=attrs,
                lists=[n.strip() for n in lists.split(LIST_SEPARATOR) if n.strip()] if lists is not None else None,
            )
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise InvalidInput(f"{where}.{field}", err["msg"]) from None


def _csv_bool(value: str | None) -> bool | None:
    if value is None or value.strip() == "":
        return None
    v = value.strip().lower()
    if v in TRUE or v in FALSE:
        return v in TRUE
    raise ValueError(f"consent must be true/false/yes/no/1/0, not {value!r}")


# A physical line longer than this is refused before it is decoded: with csv's own field limit
# (131,072 characters) it bounds what one row can hold in memory.
MAX_CSV_LINE_BYTES = 1 << 20
_LONE_CR = re.compile(r"(?<=\r)(?!\n)")


def decode_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Bytes chunks of a streamed upload -> text lines (ends kept: `\n`, `\r\n` or a lone `\r`),
    without holding the file in memory. Each line is decoded alone, so bad UTF-8 is named by its line."""
    reader = io.BufferedReader(_ChunkReader(chunks), 1 << 16)
    number = 0
    while line := reader.readline(MAX_CSV_LINE_BYTES + 1):
        number += 1
        if len(line) > MAX_CSV_LINE_BYTES and not line.endswith(b"\n"):
            raise InvalidInput(f"line {number}", f"longer than {MAX_CSV_LINE_BYTES:,} bytes")
        try:
            text = line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"line {number}", f"not valid UTF-8 ({exc.reason} at byte {exc.start + 1})") from None
        if "\r" in text:
            yield from filter(None, _LONE_CR.split(text))
        else:
            yield text


class CsvRows:
    """`csv.DictReader` (strict: a quote left open, or text after a closing quote, is an error)
    whose parse errors of any kind are a 422 naming the line where the row starts; iterating gives
    (`"line N"`, row)."""

    def __init__(self, lines: Iterable[str]):
        self._reader = csv.DictReader(lines, strict=True)
        self.fieldnames = self._guarded(lambda: self._reader.fieldnames, 1)

    def _guarded(self, read, start: int):
        try:
            return read()
        except csv.Error as exc:
            message = str(exc)
            if "field larger than field limit" in message:
                message += " characters"
            elif message == "unexpected end of data":
                message = "a quoted field is not closed (unexpected end of data)"
            raise InvalidInput(f"line {start}", f"not valid CSV: {message}") from None

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        while True:
            start = self._reader.line_num + 1
            try:
                row = self._guarded(lambda: next(self._reader), start)
            except StopIteration:
                return
            yield f"line {start}", row


class _ChunkReader(io.RawIOBase):
    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buffer))
        b[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def get_customer(session: Session, external_id: str) -> dict:
    c = repo.get_customer(session, external_id)
    if c is None:
        raise NotFound(f"no customer with external_id '{external_id}'")
    names = {v: k for k, v in repo.segments_by_name(session).items()}
    return {
        "external_id": c.external_id,
        "email": c.email,
        "segment": names.get(c.segment_id, ""),
        "status": c.status,
        "attributes": c.attributes,
    }


def import_orders(session: Session, orders: list[OrderIn]) -> dict:
    ids = repo.existing_customer_ids(session, list({o.customer_external_id for o in orders}))
    rows = []
    seen: set[str] = set()
    for i, o in enumerate(orders):
        if o.order_id in seen:
            raise InvalidInput(f"orders[{i}].order_id", f"'{o.order_id}' appears twice in this import")
        seen.add(o.order_id)
        if o.customer_external_id not in ids:
            raise InvalidInput(f"orders[{i}].customer_external_id", f"no customer '{o.customer_external_id}'")
        rows.append(
            {
                "order_id": o.order_id,
                "customer_id": ids[o.customer_external_id],
                "ordered_at": as_utc(o.ordered_at),
                "amount": o.amount,
            }
        )
    for batch in _batches(rows, BATCH):
        repo.upsert_orders(session, batch)
    session.flush()
    return {"received": len(rows)}
