"""`cdss jobs ...` / `cdss deliveries ...` against a real database (CliRunner, no node running)."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w
from pydicom.uid import generate_uid
from sqlalchemy import select
from typer.testing import CliRunner

from cdss.cli import app
from cdss.config import DispatchSettings, Settings, StorageSettings
from cdss.db import AuditEvent, Database, Delivery, DeliveryState, Job, JobState
from cdss.jobs.states import claim_next, fail_job
from cdss.leases import new_owner
from cdss.store import Spool
from tests.jobs_helpers import add_jobs, add_results, make_sc

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'cdss.db'}"
    cfg = tmp_path / "cdss.toml"
    cfg.write_text(
        tomli_w.dumps(
            {
                "database": {"url": url},
                "storage": {"path": str(tmp_path / "spool")},
                "destinations": [
                    {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 1, "send_sc": True}
                ],
            }
        )
    )
    db = Database(url)
    settings = Settings(
        storage=StorageSettings(path=tmp_path / "spool", min_free_mb=0, fsync=False),
        destinations=[{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 1, "send_sc": True}],
        dispatch=DispatchSettings(max_attempts=1),
    )
    study = generate_uid()
    dead_job, done_job = add_jobs(db, 2, max_attempts=1, study_uid=study)
    owner = new_owner("t")
    claim_next(db, owner, 60)
    fail_job(db, dead_job, owner, "RuntimeError: boom", backoff_s=0)
    add_results(db, Spool(settings.storage), settings, done_job, [make_sc(study)])
    with db.session() as s:
        d = s.execute(select(Delivery)).scalar_one()
        d.state, d.attempts, d.last_error = DeliveryState.DEAD, 1, "could not associate"
        s.get(Job, done_job).state = JobState.SUCCEEDED
        delivery_id = d.id
    yield cfg, db, dead_job, done_job, delivery_id
    db.dispose()


def test_list_rerun_and_retry(setup) -> None:
    cfg, db, dead_job, done_job, delivery_id = setup
    runner = CliRunner()
    out = runner.invoke(
        app, ["jobs", "list", "--state", "dead", "--config", str(cfg)], env={"COLUMNS": "200"}
    )
    assert out.exit_code == 0, out.output
    assert "RuntimeError: boom" in out.output and "dead: 1" in out.output
    assert "Test^Patient" not in out.output and "TEST^ID" not in out.output  # no patient data

    out = runner.invoke(app, ["jobs", "rerun", str(done_job), "--config", str(cfg)])
    assert out.exit_code == 1 and "--force" in out.output
    out = runner.invoke(app, ["jobs", "rerun", str(dead_job), "--config", str(cfg)])
    assert out.exit_code == 0, out.output

    out = runner.invoke(app, ["deliveries", "list", "--config", str(cfg)], env={"COLUMNS": "200"})
    assert out.exit_code == 0 and "could not associate" in out.output
    out = runner.invoke(app, ["deliveries", "retry", str(delivery_id), "--config", str(cfg)])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["deliveries", "retry", str(delivery_id), "--config", str(cfg)])
    assert out.exit_code == 1 and "only dead" in out.output

    with db.session() as s:
        assert s.get(Job, dead_job).state is JobState.QUEUED
        assert s.get(Delivery, delivery_id).state is DeliveryState.PENDING
        events = list(s.execute(select(AuditEvent).where(AuditEvent.user.like("cli%"))).scalars())
    assert [(e.event_id, e.outcome) for e in events] == [
        ("110103", 4),  # refused re-run of a succeeded job
        ("110103", 0),
        ("110102", 0),
        ("110102", 4),  # refused retry of a pending delivery
    ]
    assert events[1].study_instance_uid is not None


def test_configuration_examples_in_operations_doc_are_valid() -> None:
    import re
    import tomllib

    from cdss.config import Settings, load_settings

    doc = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", doc, re.S)
    assert len(blocks) >= 4
    for block in blocks:
        Settings.model_validate(tomllib.loads(block))
    load_settings(Path(__file__).resolve().parent.parent / "deploy" / "cdss.toml", environ={})
