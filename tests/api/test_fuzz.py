"""Schemathesis against the app's own OpenAPI document, with every default check (server errors,
status codes, content types, response schemas and headers, negative data rejected, positive data
accepted, missing required headers, unsupported methods, ignored auth …).

Bounded for CI: MAB_FUZZ_EXAMPLES (default 15) generated examples per operation, plus schemathesis's
explicit coverage-phase cases; derandomized (the same cases every run, so a CI failure reproduces), no
deadline, on SQLite; about 30 s for the 41 operations. The long run:

    MAB_FUZZ_EXAMPLES=500 MAB_FUZZ_DATABASE=postgresql nice -n 10 .venv/bin/pytest -q tests/api/test_fuzz.py

Each operation gets a fresh database holding a small campaign and a few customers (so ids 1 and the
external ids c0…c3 exist and the fuzzer reaches past the 404s), the rate limits off, and a real admin
key sent as X-API-Key; the ignored_auth check then replays every 2xx without a key and with a wrong one.
"""

import base64
import os

import pytest
import schemathesis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.app import create_app
from campaigns import db
from campaigns.settings import get_settings
from tests.conftest import fresh_database, point_at
from tests.factories import api_keys, customers, small_campaign_payload

EXAMPLES = int(os.environ.get("MAB_FUZZ_EXAMPLES", "15"))
DATABASE = os.environ.get("MAB_FUZZ_DATABASE", "sqlite")

# Rate limits off (the fuzzer sends thousands of mutations a minute); the webhooks configured (without
# a secret or key each is off, a 503 by design).
SENDGRID_KEY = base64.b64encode(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
ENV = {"MAB_RATE_LIMIT_INGEST_PER_MINUTE": "0", "MAB_RATE_LIMIT_MUTATIONS_PER_MINUTE": "0",
       "MAB_RATE_LIMIT_WEBHOOK_PER_MINUTE": "0", "MAB_WEBHOOK_SECRETS": "fuzz-webhook-secret",
       "MAB_MAILGUN_SIGNING_KEY": "fuzz-mailgun-key", "MAB_SENDGRID_VERIFICATION_KEY": SENDGRID_KEY,
       "MAB_POSTMARK_WEBHOOK_AUTH": "fuzz:fuzz", "MAB_SES_TOPIC_ARNS": "arn:aws:sns:eu-west-1:1:fuzz"}

app = create_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
# The admin key goes in every request (below), so the generator must not also make up or drop
# X-API-Key: a "negative" case without a key would still carry ours. Missing and wrong keys are the
# ignored_auth check's job: it replays each accepted call without the key and with a wrong one.
schema.config.generation.update(with_security_parameters=False)
# Schema-valid requests the API refuses with a 422 on purpose, by operation: rules JSON Schema cannot
# state, checked by the services and each covered by its own tests. Everywhere else a schema-valid
# request must not be a 422: what the API enforces is in its document (api/openapi_rules.py).
BUSINESS_RULES = {
    "POST /customers": "a segment named must exist",
    "POST /orders": "the customer must exist",
    "POST /customers/csv": "a header line with external_id and email",
    "POST /events/conversions.csv": "a header line with the five columns; the campaign must exist",
    "POST /campaigns": "segments must exist, the template must compile, the baseline and exclusions name "
                       "factor levels",
    "POST /events": "send_id, or campaign_id and customer_external_id; a complaint names its send",
    "GET /audit": "until must be later than since",
    "PATCH /campaigns/{campaign_id}": "the template must compile and render for the audience; a schedule's time "
                                      "zone must exist and its cron match; audience conditions must be able to hold",
    "POST /campaigns/{campaign_id}/preview": "the customer must exist; the variant must be one of the campaign's",
    "GET /campaigns/{campaign_id}/preview.html": "the customer must exist; the variant must be one of the campaign's",
    "POST /campaigns/{campaign_id}/{action}": "send_now goes with start only; start renders for the real audience",
}


@pytest.fixture
def admin_key(request, workdir, tmp_path, redis_server):
    url = fresh_database(DATABASE, request, workdir)
    point_at(url, tmp_path / "outbox", **ENV)
    key = api_keys()["admin"]
    with TestClient(app) as client:
        h = {"X-API-Key": key}
        assert client.post("/customers", headers=h, json={"customers": customers(4)}).status_code == 200
        r = client.post("/campaigns", headers=h, json=small_campaign_payload())
        assert r.status_code == 201, r.text
    yield key
    db.reset_engine()
    for name in ENV:
        os.environ.pop(name, None)
    get_settings.cache_clear()


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case, admin_key):
    excluded = [positive_data_acceptance] if case.operation.label in BUSINESS_RULES else []
    case.call_and_validate(headers={"X-API-Key": admin_key}, excluded_checks=excluded)
