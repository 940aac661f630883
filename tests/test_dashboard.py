"""The dashboard in headless Chromium: real clicks, and the page shows what the API says.

The page is served by the API (no external assets: every request the browser makes is checked
to stay on the node). The screenshot in docs/images/dashboard.png comes from this test
(``CDSS_WRITE_SCREENSHOT=1``).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from cdss.api import create_app
from cdss.config import Settings
from cdss.db import Database, Delivery, DeliveryState, Job, JobState
from cdss.db.models import AuditEvent
from tests.api_helpers import LUMBAR_TEXT, Seeded, bearer, seed
from tests.peers import free_port, require, require_binary

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "dashboard.png"


@dataclass
class Node:
    url: str
    db: Database
    seeded: Seeded

    def api(self, path: str, token: str) -> dict:
        r = httpx.get(self.url + path, headers=bearer(token), timeout=30)
        r.raise_for_status()
        return r.json()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    from cdss.store import Spool

    settings = Settings.model_validate(
        {"storage": {"path": str(tmp_path / "spool"), "min_free_mb": 1, "fsync": False}}
    )
    db = Database(f"sqlite:///{tmp_path / 'cdss.db'}")
    seeded = seed(db, spool=Spool(settings.storage))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, db), host="127.0.0.1", port=port, log_level="warning", access_log=False
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield Node(f"http://127.0.0.1:{port}", db, seeded)
    finally:
        server.should_exit = True
        thread.join(15)
        db.dispose()


@pytest.fixture
def browser():  # type: ignore[no-untyped-def]
    exe = require_binary("chromium", "chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - playwright is in the test extra
        require(False, "the playwright Python package", "pip install playwright")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


def sign_in(page, token: str) -> None:  # type: ignore[no-untyped-def]
    page.fill("#token-input", token)
    page.click("#login-button")


def test_dashboard(node: Node, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1250})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(node.url + "/")
    assert page.url == node.url + "/dashboard/"
    expect(page.locator("#main")).to_be_hidden()

    # a wrong token: refused, nothing shown, a security alert with the browser's address
    sign_in(page, "cdss_wrong")
    expect(page.locator("#message")).to_contain_text("401")
    expect(page.locator("#main")).to_be_hidden()

    # the auditor sees everything but cannot act
    sign_in(page, node.seeded.auditor)
    expect(page.locator("#whoami-name")).to_have_text("olivia")
    dead_job = node.seeded.jobs["dead_job"]
    expect(page.locator(f'#dead-jobs tr[data-job-id="{dead_job}"]')).to_be_visible()
    assert page.locator("#dead-jobs button, #dead-deliveries button").count() == 0
    page.click("#logout-button")
    expect(page.locator("#login")).to_be_visible()

    # the admin
    sign_in(page, node.seeded.admin)
    expect(page.locator("#whoami-role")).to_have_text("admin")
    stats = node.api("/api/v1/stats", node.seeded.admin)
    tiles = {
        "#stat-received": stats["received"],
        "#stat-analysed": stats["analysed"],
        "#stat-delivered": stats["delivered"],
        "#stat-failed": stats["failed"],
        "#stat-queue-jobs": stats["queue_depth"]["jobs"],
        "#stat-running": stats["jobs"]["running"],
        "#stat-queue-deliveries": stats["queue_depth"]["deliveries"],
    }
    for selector, value in tiles.items():
        expect(page.locator(selector)).to_have_text(str(value))
    assert stats["received"] == 4 and stats["failed"] >= 2

    studies = node.api("/api/v1/studies?limit=10", node.seeded.admin)
    rows = page.locator("#studies-table tbody tr")
    expect(rows).to_have_count(studies["total"])
    for i, study in enumerate(studies["items"]):
        row = rows.nth(i)
        expect(row.locator("td").nth(1)).to_have_text(study["accession_number"])
        expect(row.locator(".status")).to_have_text(study["status"])
    ok_row = page.locator(f'#studies-table tr[data-study-id="{node.seeded.studies["ok"]}"]')
    expect(ok_row.locator("td.findings")).to_have_text(LUMBAR_TEXT)
    thumb = ok_row.locator("img.thumb")
    expect(thumb).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle())
    assert ok_row.locator(".placeholder").count() == 0  # the GSPS overlay was drawn
    queued_row = page.locator(f'#studies-table tr[data-study-id="{node.seeded.studies["queued"]}"]')
    expect(queued_row.locator("img.thumb")).to_be_visible()
    expect(queued_row.locator(".placeholder")).to_have_text("no overlay (no results yet)")

    # failures in the audit trail (the refused token above is one of them)
    page.check("#audit-failures")
    page.click("#audit-search")
    failures = node.api("/api/v1/audit/events?failures_only=true&limit=50", node.seeded.admin)
    expect(page.locator("#audit-table tbody tr")).to_have_count(len(failures["items"]))
    expect(page.locator("#audit-table tbody")).to_contain_text("API request with an unknown token")
    page.uncheck("#audit-failures")

    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    if os.environ.get("CDSS_WRITE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "dashboard.png", SCREENSHOT)

    # act: re-run the dead job and retry the dead delivery, with real clicks
    page.locator(f'#dead-jobs tr[data-job-id="{dead_job}"] button').click()
    expect(page.locator("#message")).to_have_text(f"job {dead_job} queued again")
    dead_delivery = node.seeded.deliveries["dead_delivery"][0]
    page.locator(f'#dead-deliveries tr[data-delivery-id="{dead_delivery}"] button').click()
    expect(page.locator("#message")).to_have_text(f"delivery {dead_delivery} queued again")
    with node.db.session() as s:
        assert s.get(Job, dead_job).state is JobState.QUEUED
        assert s.get(Delivery, dead_delivery).state is DeliveryState.PENDING
    after = node.api("/api/v1/stats", node.seeded.admin)
    expect(page.locator("#stat-failed")).to_have_text(str(after["failed"]))
    expect(page.locator("#stat-queue-jobs")).to_have_text(str(after["queue_depth"]["jobs"]))
    expect(page.locator("#dead-jobs tbody td.empty")).to_have_text("none")

    # audit search finds the re-run; the page shows the API's total
    page.select_option("#audit-event", "110103")
    page.fill("#audit-user", "alice")
    page.click("#audit-search")
    api_page = node.api("/api/v1/audit/events?event=110103&user=alice&limit=50", node.seeded.admin)
    expect(page.locator("#audit-summary")).to_have_text(
        f"{len(api_page['items'])} of {api_page['total']} events (newest first)"
    )
    expect(page.locator("#audit-table tbody tr").first).to_contain_text(f"job {dead_job} queued again")
    page.click("#audit-verify")
    expect(page.locator("#audit-summary")).to_contain_text("chain OK")

    # nothing left the node: no CDN, no fonts, no telemetry
    assert requests and all(u.startswith(node.url + "/") or u.startswith("blob:") for u in requests), [
        u for u in requests if not u.startswith(node.url)
    ]
    with node.db.session() as s:
        alerts = list(s.execute(select(AuditEvent).where(AuditEvent.event_id == "110113")).scalars())
        logouts = list(s.execute(select(AuditEvent).where(AuditEvent.event_type == "Logout")).scalars())
    assert any(a.detail.get("reason") == "unknown_token" and a.source == "127.0.0.1" for a in alerts)
    assert [e.user for e in logouts] == ["olivia"]
