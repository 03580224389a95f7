"""GDPR: everything stored about one customer (export), and erasure of their personal data."""

from fastapi import APIRouter, Request

from api.deps import Admin, SessionDep
from campaigns.schemas import CustomerExport, ErasureResult
from campaigns.services import privacy

router = APIRouter(prefix="/customers/{external_id}", tags=["privacy"])


@router.get("/export", response_model=CustomerExport, dependencies=[Admin])
def export_customer(external_id: str, session: SessionDep):
    """Profile, attributes, segment, consent and status, orders, every send (campaign, period,
    variant, time, clicks, conversions, revenue) and every event stored about the customer."""
    return privacy.export(session, external_id)


@router.post("/erase", response_model=ErasureResult, dependencies=[Admin])
def erase_customer(external_id: str, session: SessionDep, request: Request):
    """Remove the customer's personal data for good and stop all mail to them. The send ledger's
    rows stay (anonymous), so every campaign's statistics and reports are unchanged."""
    result = privacy.erase(session, external_id)
    request.state.audit_object = ("customer", result["customer_id"])  # its external id is gone now
    return result
