import tempfile
from typing import Annotated

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from api import bodies
from api.deps import Marketer, Reader, SessionDep
from api.idempotency import IdempotencyDep, StreamedIdempotencyDep
from api.pagination import PageDep, link_next
from campaigns.schemas import (
    CustomerPublic,
    CustomersIn,
    DeriveResult,
    ImportResult,
    OrdersIn,
    SegmentCreate,
    SegmentPublic,
)
from campaigns.services import customers, pages, segments

router = APIRouter(tags=["audience"])

SPOOL_IN_MEMORY = 8 * 1024 * 1024  # larger uploads spill to a temporary file, never all in RAM


@router.get("/segments", response_model=list[SegmentPublic], dependencies=[Reader])
def list_segments(request: Request, response: Response, session: SessionDep, page: PageDep):
    items, nxt = pages.segments(session, page.limit, page.cursor)
    link_next(request, response, nxt)
    return items


@router.post("/segments", status_code=201, response_model=SegmentPublic, dependencies=[Marketer])
def create_segment(body: SegmentCreate, session: SessionDep):
    return segments.create_segment(session, body.name, body.description)


@router.post("/segments/derive", response_model=DeriveResult, dependencies=[Marketer])
def derive_segments(session: SessionDep):
    """Re-segment every customer from purchase history (RFM rules: see docs/marketer/customers.md)."""
    return segments.derive_segments(session)


@router.post("/customers", response_model=ImportResult, dependencies=[Marketer],
             openapi_extra=bodies.documented(CustomersIn))
def import_customers_json(session: SessionDep, idem: IdempotencyDep,
                          body: Annotated[CustomersIn, bodies.bulk_body(CustomersIn)]):
    return idem.respond(customers.import_customers(session, customers.json_rows(body.customers)))


@router.post(
    "/customers/csv",
    response_model=ImportResult,
    dependencies=[Marketer],
    openapi_extra={"requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}, "required": True}},
)
async def import_customers_csv(request: Request, session: SessionDep, idem: StreamedIdempotencyDep):
    """Streamed CSV: header `external_id,email,segment,…`; extra columns become typed attributes
    (integers, decimals, booleans and ISO dates are inferred per column; `points:int` in the header
    sets a column's type).
    A bad row refuses the whole file (422 naming its line) and nothing is written."""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
        await idem.spool(request.stream(), spool)  # hashes the body for an Idempotency-Key on the way

        def lines():
            spool.seek(0)
            return customers.decode_lines(iter(lambda: spool.read(1 << 16), b""))

        # two passes over the spooled file: the columns' types first, then the typed rows
        types = await run_in_threadpool(customers.csv_column_types, lines())
        result = await run_in_threadpool(customers.import_customers, session, customers.csv_rows(lines(), types))
        return await idem.arespond(result)


@router.get("/customers/{external_id}", response_model=CustomerPublic, dependencies=[Marketer])
def get_customer(external_id: str, session: SessionDep):
    return customers.get_customer(session, external_id)


@router.post("/orders", dependencies=[Marketer], openapi_extra=bodies.documented(OrdersIn))
def import_orders(session: SessionDep, idem: IdempotencyDep,
                  body: Annotated[OrdersIn, bodies.bulk_body(OrdersIn)]) -> dict:
    return idem.respond(customers.import_orders(session, body.orders))
