"""Property-based tests of the JSON API against its own OpenAPI schema (schemathesis).

For every endpoint, schemathesis draws requests from the published schema, valid ones and
deliberately invalid ones (wrong types, out-of-range numbers, missing fields: hostile inputs),
and checks: never a 5xx, only documented status codes, JSON bodies that match the schema, and
schema-invalid requests rejected with a 4xx. Examples are bounded (25 per endpoint and mode, no
shrinking database) so the whole run stays short.
"""

from __future__ import annotations

import atexit
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from serve_helpers import write_run

from kernelscope.serve import create_app

# The app is built at import (schemathesis' pytest fixture loader does not run under pytest 9):
# a hand-written run in a temporary directory, removed when the module's tests are done.
_TMP = tempfile.TemporaryDirectory(prefix="kernelscope-serve-schema-")
atexit.register(_TMP.cleanup)  # also when this module's tests are deselected (cleanup is idempotent)
_APP = create_app([write_run(Path(_TMP.name) / "run")], atlas_n_null=60)
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)
schema.config.generation.update(modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
                                deterministic=True, database="none")


@pytest.fixture(scope="module", autouse=True)
def _remove_the_run():
    yield
    _TMP.cleanup()


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case):
    case.call_and_validate(checks=CHECKS)
