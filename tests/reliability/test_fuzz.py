"""Property-based fuzzing of every documented operation with schemathesis.

Each operation gets valid and invalid requests (as an admin, so that validation, not
access control, is what answers). No response may be a 5xx, every response must match
the OpenAPI document (status, content type, schema), input the document calls invalid
must be refused, and a refused request must leave every table exactly as it was.
Bounded and derandomized: the same cases every run, in well under a minute.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from api.openapi import OPERATIONS
from orchestrator import db
from tests.conftest import ADMIN_KEY, PG_ADMIN_URL
from tests.reliability import faults
from tests.reliability.conftest import make_app
from tests.support import state_digest

# Streams run for seconds by design; the role matrix covers them.
NOT_FUZZED = {("/api/events", "get")}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection]
EXAMPLES = 20


@pytest.fixture(scope="module")
def fuzz_db(settings):
    """A database of the fuzz's own: the session's stack (its worker, sweeper and beat)
    writes to the shared one in the background, which two digests would take for the
    fuzzed request's doing."""
    url, name = faults.fresh_database(PG_ADMIN_URL)
    yield url
    db.reset()
    db.init(settings)
    faults.drop_database(PG_ADMIN_URL, name)


@pytest.fixture(scope="module")
def fuzz_schema(settings, fuzz_db):
    app = make_app(settings, database_url=fuzz_db)
    return schemathesis.openapi.from_wsgi("/api/openapi.json", app)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("path,method", sorted(set(OPERATIONS) - NOT_FUZZED))
def test_api_fuzz(fuzz_schema, fuzz_db, path, method, mode):
    if path not in fuzz_schema.raw_schema["paths"]:
        pytest.skip(f"{path} is not served by this app")
    documented = OPERATIONS[(path, method)]
    if mode is GenerationMode.NEGATIVE and not (
            documented.get("parameters") or documented.get("requestBody")):
        pytest.skip("takes no input, so there is no invalid input to send")
    strategy = fuzz_schema[path][method.upper()].as_strategy(generation_mode=mode)

    @given(case=strategy, data=st.data())
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case, data):
        before = state_digest(fuzz_db)
        response = case.call(headers={"x-api-key": ADMIN_KEY})
        case.validate_response(response, checks=CHECKS)
        if response.status_code >= 400:
            assert state_digest(fuzz_db) == before, (
                f"{case.method} {case.path} answered {response.status_code} "
                "but changed stored state")

    run()
