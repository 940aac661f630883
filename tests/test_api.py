"""Admin API against SQLite and PostgreSQL: authentication, roles, audited reads, filters, exports, actions."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from cdss.api import create_app
from cdss.audit.chain import CHAINED_FIELDS, canonical
from cdss.config import Settings
from cdss.db import Database, Delivery, DeliveryState, Job, JobState
from cdss.db.models import ApiToken, AuditEvent
from tests.api_helpers import CERVICAL_TEXT, LUMBAR_TEXT, Seeded, bearer, seed


@pytest.fixture
def node_db(db_url: str) -> Iterator[Database]:
    db = Database(db_url, pool_size=4)
    yield db
    db.dispose()


@pytest.fixture
def seeded(node_db: Database) -> Seeded:
    return seed(node_db)


@pytest.fixture
def client(node_db: Database, seeded: Seeded, tmp_path) -> Iterator[TestClient]:
    settings = Settings.model_validate({"storage": {"path": str(tmp_path / "spool"), "min_free_mb": 1}})
    with TestClient(create_app(settings, node_db), client=("192.0.2.7", 50000)) as c:
        yield c


def events(db: Database, event_id: str | None = None) -> list[AuditEvent]:
    with db.session() as s:
        stmt = select(AuditEvent).order_by(AuditEvent.seq)
        if event_id:
            stmt = stmt.where(AuditEvent.event_id == event_id)
        return list(s.execute(stmt).scalars())


# ------------------------------------------------------------------ anonymous endpoints
def test_health_and_readiness_are_anonymous_and_free_of_phi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True
    assert set(body["checks"]) == {"database", "spool", "workers"}
    for phi in ("PAT-1", "ACC001", "DOE"):
        assert phi not in ready.text
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["token"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["token"]["description"],
    }


def test_readiness_fails_when_spool_is_below_watermark_or_workers_are_down(
    node_db: Database, tmp_path
) -> None:
    class Node:
        def workers_alive(self) -> int:
            return 1

        def workers_expected(self) -> int:
            return 3

    settings = Settings.model_validate({"storage": {"path": str(tmp_path), "min_free_mb": 10**12}})
    with TestClient(create_app(settings, node_db, node=Node())) as c:
        r = c.get("/readyz")
    assert r.status_code == 503
    checks = r.json()["checks"]
    assert checks["database"]["ok"] is True
    assert checks["spool"]["ok"] is False
    assert checks["workers"] == {"ok": False, "detail": "1 of 3 workers alive"}


# ------------------------------------------------------------------ authentication
def test_missing_unknown_and_revoked_tokens_get_401_and_a_security_alert(
    client: TestClient, node_db: Database, seeded: Seeded
) -> None:
    before = len(events(node_db, "110113"))
    r = client.get("/api/v1/studies")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/v1/studies", headers=bearer("cdss_not-a-real-token")).status_code == 401
    assert client.get("/api/v1/studies", headers={"Authorization": "Basic YWxpY2U6eA=="}).status_code == 401
    # revoke the auditor through the API, then use it
    assert client.delete("/api/v1/tokens/olivia", headers=bearer(seeded.admin)).status_code == 200
    assert client.get("/api/v1/stats", headers=bearer(seeded.auditor)).status_code == 401
    alerts = events(node_db, "110113")[before:]
    reasons = [(e.detail or {}).get("reason") for e in alerts if e.outcome == 4]
    assert reasons == ["missing_token", "unknown_token", "missing_token", "revoked_token"]
    for e in alerts:
        assert e.source == "192.0.2.7"
        assert e.event_name == "Security Alert"
    revoked = next(e for e in alerts if (e.detail or {}).get("reason") == "revoked_token")
    assert revoked.user == "olivia"
    assert revoked.event_type == "Use of Restricted Function"


def test_auditor_cannot_act_and_the_attempt_is_audited(
    client: TestClient, node_db: Database, seeded: Seeded
) -> None:
    job_id = seeded.jobs["dead_job"]
    r = client.post(f"/api/v1/jobs/{job_id}/rerun", headers=bearer(seeded.auditor))
    assert r.status_code == 403
    r = client.post(
        f"/api/v1/deliveries/{seeded.deliveries['dead_delivery'][0]}/retry", headers=bearer(seeded.auditor)
    )
    assert r.status_code == 403
    assert (
        client.post(
            "/api/v1/tokens", json={"name": "x", "role": "admin"}, headers=bearer(seeded.auditor)
        ).status_code
        == 403
    )
    denied = [e for e in events(node_db, "110113") if (e.detail or {}).get("reason") == "wrong_role"]
    assert [e.user for e in denied] == ["olivia"] * 3
    assert {e.detail["path"] for e in denied} == {
        f"/api/v1/jobs/{job_id}/rerun",
        f"/api/v1/deliveries/{seeded.deliveries['dead_delivery'][0]}/retry",
        "/api/v1/tokens",
    }
    with node_db.session() as s:
        assert s.get(Job, job_id).state is JobState.DEAD


def test_first_use_is_a_login_event_and_logout_is_recorded(
    client: TestClient, node_db: Database, seeded: Seeded
) -> None:
    assert client.get("/api/v1/auth/whoami", headers=bearer(seeded.auditor)).json() == {
        "name": "olivia",
        "role": "auditor",
    }
    client.get("/api/v1/stats", headers=bearer(seeded.auditor))
    assert client.post("/api/v1/auth/logout", headers=bearer(seeded.auditor)).status_code == 204
    auth = [(e.user, e.event_type) for e in events(node_db, "110114")]
    assert auth == [("olivia", "Login"), ("olivia", "Logout")]


# ------------------------------------------------------------------ audited reads and filters
def test_study_search_filters_totals_and_audit(client: TestClient, node_db: Database, seeded: Seeded) -> None:
    h = bearer(seeded.auditor)
    page = client.get("/api/v1/studies", headers=h).json()
    assert page["total"] == 4
    assert [s["accession_number"] for s in page["items"]] == ["ACC004", "ACC003", "ACC002", "ACC001"]
    status = {s["accession_number"]: s["status"] for s in page["items"]}
    assert status == {"ACC001": "complete", "ACC002": "failed", "ACC003": "failed", "ACC004": "in_progress"}
    ok = page["items"][3]
    assert ok["findings"][0]["text"] == LUMBAR_TEXT
    assert ok["calling_aes"] == ["MOD1"] and ok["modalities"] == ["DX"] and ok["instances"] == 1

    def accessions(**params) -> list[str]:
        r = client.get("/api/v1/studies", params=params, headers=h)
        assert r.status_code == 200, r.text
        return sorted(s["accession_number"] for s in r.json()["items"])

    assert accessions(accession="ACC002") == ["ACC002"]
    assert accessions(patient_id="PAT-3") == ["ACC003"]
    assert accessions(calling_ae="MOD2") == ["ACC002"]
    assert accessions(modality="CR") == ["ACC002"]
    assert accessions(status="failed") == ["ACC002", "ACC003"]
    assert accessions(status="in_progress") == ["ACC004"]
    assert accessions(analysis="cervical_oblique") == ["ACC003"]
    assert accessions(finding="ABNORMAL") == ["ACC003"]
    assert accessions(finding='"grade": "I"') == ["ACC001"]
    assert accessions(finding="100%_") == []  # LIKE wildcards are literal
    pages = [
        client.get("/api/v1/studies", params={"limit": 3, "offset": o}, headers=h).json() for o in (0, 3)
    ]
    assert [len(p["items"]) for p in pages] == [3, 1] and pages[1]["total"] == 4
    assert accessions(since=ok["created_at"], until="2999-01-01T00:00:00Z") == [
        "ACC001",
        "ACC002",
        "ACC003",
        "ACC004",
    ]
    assert accessions(until=ok["created_at"]) == []

    queries = events(node_db, "110112")
    assert all(e.user == "olivia" and e.source == "192.0.2.7" for e in queries)
    by_acc = [e for e in queries if e.accession_number == "ACC002"]
    assert (
        len(by_acc) == 1
        and by_acc[0].detail["results"] == 1
        and "accession=ACC002" in by_acc[0].detail["query"]
    )
    assert [e for e in queries if e.patient_id == "PAT-3"]


def test_instances_jobs_results_deliveries_filters(client: TestClient, seeded: Seeded) -> None:
    h = bearer(seeded.auditor)
    inst = client.get("/api/v1/instances", params={"calling_ae": "MOD1"}, headers=h).json()
    assert inst["total"] == 3 and {i["calling_ae_title"] for i in inst["items"]} == {"MOD1"}
    jobs = client.get("/api/v1/jobs", params={"status": "dead"}, headers=h).json()
    assert [j["id"] for j in jobs["items"]] == [seeded.jobs["dead_job"]]
    assert jobs["items"][0]["last_error"].startswith("RuntimeError")
    assert client.get(f"/api/v1/jobs/{seeded.jobs['ok']}", headers=h).json()["summary_text"] == LUMBAR_TEXT
    cervical = client.get(f"/api/v1/jobs/{seeded.jobs['dead_delivery']}", headers=h).json()
    assert (
        cervical["summary_text"] == CERVICAL_TEXT and cervical["summary"]["cervical"]["label"] == "abnormal"
    )
    assert client.get("/api/v1/jobs/999999", headers=h).status_code == 404
    res = client.get("/api/v1/results", params={"kind": "seg"}, headers=h).json()
    assert res["total"] == 1 and res["items"][0]["accession_number"] == "ACC001"
    dead = client.get("/api/v1/deliveries", params={"status": "dead"}, headers=h).json()
    assert [d["id"] for d in dead["items"]] == seeded.deliveries["dead_delivery"]
    assert (
        client.get(
            "/api/v1/deliveries", params={"status": "delivered", "accession": "ACC001"}, headers=h
        ).json()["total"]
        == 3
    )
    assert client.get("/api/v1/jobs", params={"status": "bogus"}, headers=h).status_code == 422
    assert client.get("/api/v1/jobs", params={"limit": 0}, headers=h).status_code == 422


def test_csv_export(client: TestClient, seeded: Seeded, node_db: Database) -> None:
    with node_db.session() as s:
        s.get(Job, seeded.jobs["dead_job"]).last_error = '=HYPERLINK("http://evil")'
    r = client.get(
        "/api/v1/jobs", params={"format": "csv", "limit": 3, "offset": 1}, headers=bearer(seeded.auditor)
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["x-total-count"] == "4"
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 3
    assert set(rows[0]) >= {"id", "state", "accession_number", "summary", "last_error"}
    dead = next(row for row in rows if row["state"] == "dead")
    assert dead["last_error"].startswith("'=")  # spreadsheet formula neutralised
    audit_csv = client.get("/api/v1/audit/events", params={"format": "csv"}, headers=bearer(seeded.auditor))
    assert next(iter(csv.reader(io.StringIO(audit_csv.text))))[:3] == ["seq", "occurred_at", "event_id"]


def test_history_by_accession(client: TestClient, seeded: Seeded, node_db: Database) -> None:
    r = client.get("/api/v1/studies/by-accession/ACC001/history", headers=bearer(seeded.auditor))
    assert r.status_code == 200
    [history] = r.json()
    assert history["study"]["accession_number"] == "ACC001"
    assert history["received_at"] <= history["analysed_at"] <= history["delivered_at"]
    stages = [t["stage"] for t in history["timeline"] if t["stage"] != "audit"]
    assert stages[0] == "received"
    for earlier, later in [
        ("received", "analysis_started"),
        ("analysis_started", "analysed"),
        ("analysed", "result_created"),
        ("result_created", "delivered"),
    ]:
        assert stages.index(earlier) < stages.index(later), stages
    assert stages.count("delivered") == 3
    audit_names = {e["event_id"] for e in history["audit_events"]}
    assert {"110104", "110103"} <= audit_names
    assert {"SEG", "SR", "GSPS"} == {d["kind"] for d in history["deliveries"]}
    assert (
        client.get("/api/v1/studies/by-accession/NOPE/history", headers=bearer(seeded.auditor)).status_code
        == 404
    )
    by_id = client.get(
        f"/api/v1/studies/{seeded.studies['ok']}/history", headers=bearer(seeded.auditor)
    ).json()

    def records(h: dict) -> list:
        return [t for t in h["timeline"] if t["stage"] != "audit"]

    assert records(by_id) == records(history)
    # the history shows who looked at the study: the first read is an audit event of the second
    assert [e["user"] for e in by_id["audit_events"] if e["event_id"] == "110112"] == ["olivia"]
    reads = [e for e in events(node_db, "110112") if e.accession_number == "ACC001"]
    assert len(reads) == 2 and all(
        e.study_instance_uid == history["study"]["study_instance_uid"] for e in reads
    )


def test_audit_reads_are_audit_log_used(client: TestClient, seeded: Seeded, node_db: Database) -> None:
    h = bearer(seeded.auditor)
    page = client.get("/api/v1/audit/events", params={"event": "110104", "order": "oldest"}, headers=h).json()
    assert page["total"] >= 4 and all(e["event_id"] == "110104" for e in page["items"])
    seqs = [e["seq"] for e in page["items"]]
    assert seqs == sorted(seqs)
    one = client.get(f"/api/v1/audit/events/{seqs[0]}", headers=h).json()
    assert one["seq"] == seqs[0] and len(one["hash"]) == 64
    xml = client.get(f"/api/v1/audit/events/{seqs[0]}/dicom", headers=h)
    assert xml.headers["content-type"].startswith("application/xml") and b"<AuditMessage>" in xml.content
    verify = client.get("/api/v1/audit/verify", headers=h).json()
    assert verify["ok"] is True and verify["problem"] is None
    bad = client.get("/api/v1/audit/verify", params={"anchor": "1:xyz"}, headers=h)
    assert bad.status_code == 422
    used = events(node_db, "110101")
    assert len(used) == 4 and all(e.user == "olivia" for e in used)
    assert used[0].detail["filter"] == {"event": "110104"}


def test_stats_and_metrics(client: TestClient, seeded: Seeded, node_db: Database) -> None:
    stats = client.get("/api/v1/stats", headers=bearer(seeded.auditor)).json()
    assert stats["received"] == 4 and stats["studies"] == 4
    assert stats["analysed"] == 2 and stats["failed"] == 2 and stats["delivered"] == 3
    assert stats["queue_depth"] == {"jobs": 1, "deliveries": 0}
    assert stats["workers"] is None
    assert client.get("/metrics").status_code == 401
    m = client.get("/metrics", headers=bearer(seeded.auditor))
    assert m.status_code == 200
    assert 'cdss_jobs{state="dead"} 1.0' in m.text
    assert 'cdss_queue_depth{queue="jobs"} 1.0' in m.text
    assert "cdss_instances_received_total" in m.text or "# HELP cdss_instances_received_total" in m.text
    assert "cdss_audit_chain_head_seq" in m.text
    anon = Settings.model_validate({"api": {"metrics_require_token": False}})
    with TestClient(create_app(anon, node_db)) as c:
        assert c.get("/metrics").status_code == 200


# ------------------------------------------------------------------ actions
def test_admin_reruns_a_dead_job_and_retries_a_dead_delivery(
    client: TestClient, seeded: Seeded, node_db: Database
) -> None:
    h = bearer(seeded.admin)
    job_id = seeded.jobs["dead_job"]
    r = client.post(f"/api/v1/jobs/{job_id}/rerun", headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "queued" and r.json()["attempts"] == 0
    again = client.post(f"/api/v1/jobs/{job_id}/rerun", headers=h)
    assert again.status_code == 409
    assert client.post(f"/api/v1/jobs/{seeded.jobs['ok']}/rerun", headers=h).status_code == 409
    assert (
        client.post(f"/api/v1/jobs/{seeded.jobs['ok']}/rerun", params={"force": True}, headers=h).status_code
        == 200
    )
    assert client.post("/api/v1/jobs/424242/rerun", headers=h).status_code == 404
    did = seeded.deliveries["dead_delivery"][0]
    r = client.post(f"/api/v1/deliveries/{did}/retry", headers=h)
    assert r.status_code == 200 and r.json()["state"] == "pending"
    assert client.post(f"/api/v1/deliveries/{did}/retry", headers=h).status_code == 409
    with node_db.session() as s:
        assert s.get(Job, job_id).state is JobState.QUEUED
        assert s.get(Delivery, did).state is DeliveryState.PENDING
    acts = [e for e in events(node_db) if e.user == "alice" and (e.detail or {}).get("request")]
    summary = [(e.event_id, e.outcome, e.detail["request"]) for e in acts]
    assert summary == [
        ("110103", 0, "rerun"),
        ("110103", 4, "rerun"),
        ("110103", 4, "rerun"),
        ("110103", 0, "rerun"),
        ("110102", 0, "retry"),
        ("110102", 4, "retry"),
    ]
    assert acts[0].accession_number == "ACC002" and acts[0].patient_id == "PAT-2"


def test_token_management_api(client: TestClient, seeded: Seeded, node_db: Database) -> None:
    h = bearer(seeded.admin)
    r = client.post("/api/v1/tokens", json={"name": "prometheus", "role": "auditor"}, headers=h)
    assert r.status_code == 201
    secret = r.json()["token"]
    assert secret.startswith("cdss_")
    assert client.get("/api/v1/auth/whoami", headers=bearer(secret)).json()["role"] == "auditor"
    assert (
        client.post("/api/v1/tokens", json={"name": "prometheus", "role": "admin"}, headers=h).status_code
        == 409
    )
    names = {t["name"]: t["active"] for t in client.get("/api/v1/tokens", headers=h).json()}
    assert names == {"alice": True, "olivia": True, "prometheus": True}
    assert all(
        "token" not in t for t in client.get("/api/v1/tokens", headers=h).json()
    )  # secrets never listed
    assert client.delete("/api/v1/tokens/prometheus", headers=h).status_code == 200
    assert client.delete("/api/v1/tokens/prometheus", headers=h).status_code == 409
    assert client.delete("/api/v1/tokens/nobody", headers=h).status_code == 404
    assert client.get("/api/v1/auth/whoami", headers=bearer(secret)).status_code == 401
    changes = [
        e.detail["change"] for e in events(node_db, "110113") if (e.detail or {}).get("token") == "prometheus"
    ]
    assert changes == ["created", "revoked"]
    with node_db.session() as s:
        row = s.execute(select(ApiToken).where(ApiToken.name == "prometheus")).scalar_one()
        assert row.token_sha256 == hashlib.sha256(secret.encode()).hexdigest()
        trail = [
            canonical({c: getattr(e, c) for c in CHAINED_FIELDS})
            for e in s.execute(select(AuditEvent)).scalars()
        ]
    assert not any(secret.encode() in t for t in trail)  # the secret is in no audit row
