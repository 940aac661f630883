"""Property-based conformance of the API to its own OpenAPI document (schemathesis, bounded examples).

For every operation schemathesis generates valid and invalid requests and checks: no server
error, documented status codes and content types, responses matching their models, invalid
input rejected, and operations with a security requirement refusing requests without a token.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from cdss.api import create_app
from cdss.config import Settings
from cdss.db import Database
from tests.api_helpers import bearer, seed


class _Delegate:
    """The ASGI app under test, swapped per test for one with a freshly seeded database.

    The OpenAPI document does not depend on the database, so the schema is loaded at import
    time from an app without one (``schemathesis.pytest.from_fixture`` does not work with pytest 9).
    """

    def __init__(self) -> None:
        self.app = create_app(Settings(), None)
        self.token = ""

    async def __call__(self, scope, receive, send):  # type: ignore[no-untyped-def]
        await self.app(scope, receive, send)


TARGET = _Delegate()
schema = schemathesis.openapi.from_asgi("/openapi.json", TARGET)


@pytest.fixture
def seeded_app(tmp_path: Path) -> Iterator[None]:
    db = Database(f"sqlite:///{tmp_path / 'cdss.db'}")
    TARGET.token = seed(db).admin
    TARGET.app = create_app(
        Settings.model_validate({"storage": {"path": str(tmp_path / "spool"), "min_free_mb": 0}}), db
    )
    yield
    db.dispose()


@schema.parametrize()
@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_api_conforms_to_its_openapi(case: schemathesis.Case, seeded_app: None) -> None:
    case.call_and_validate(headers=bearer(TARGET.token))


def test_openapi_document_describes_every_operation(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'cdss.db'}")
    try:
        spec = create_app(Settings(), db).openapi()
    finally:
        db.dispose()
    assert spec["info"]["title"] == "cdss admin and audit API"
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert op.get("summary"), f"{method.upper()} {path} has no summary"
            ok = op["responses"].get("200") or op["responses"].get("201") or op["responses"].get("204")
            assert ok is not None and ok.get("description"), f"{method.upper()} {path}"
            if path.startswith("/api/"):
                assert op.get("security") == [{"token": []}], f"{method.upper()} {path} must require a token"
                assert "401" in op["responses"], f"{method.upper()} {path} must document 401"
    for name in ("StudyOut", "JobOut", "AuditEventOut", "StudyHistory", "StatsOut"):
        model = spec["components"]["schemas"][name]
        described = [f for f, p in model["properties"].items() if p.get("description")]
        assert described, f"{name} fields carry no descriptions"
