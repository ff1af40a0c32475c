"""Property-based fuzzing of every documented operation with schemathesis.

Each operation gets valid and invalid requests (as an admin, so that validation, not
access control, is what answers). No response may be a 5xx, every response must match
the OpenAPI document (status, content type, schema), input the document calls invalid
must be refused, and a refused request must leave every table exactly as it was.
Bounded and derandomized: the same cases every run, in well under a minute.
"""

from __future__ import annotations

import psycopg
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
from tests.conftest import ADMIN_KEY
from tests.support import state_digest

# Streams run for seconds by design; the role matrix covers them.
NOT_FUZZED = {("/api/events", "get")}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection]
EXAMPLES = 20


def pause_schedules(database_url: str) -> None:
    """Disable the schedules earlier cases created: the test stack's beat shares this
    database and would otherwise start their runs between a case's two digests."""
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE schedules SET enabled = false WHERE enabled")


@pytest.fixture(scope="module")
def fuzz_schema(app):
    return schemathesis.openapi.from_wsgi("/api/openapi.json", app)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("path,method", sorted(set(OPERATIONS) - NOT_FUZZED))
def test_api_fuzz(fuzz_schema, database_url, path, method, mode):
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
        pause_schedules(database_url)
        before = state_digest(database_url)
        response = case.call(headers={"x-api-key": ADMIN_KEY})
        case.validate_response(response, checks=CHECKS)
        if response.status_code >= 400:
            assert state_digest(database_url) == before, (
                f"{case.method} {case.path} answered {response.status_code} "
                "but changed stored state")

    run()
