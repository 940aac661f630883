"""Soak (CI form, about 5 minutes): the node under twice its own sustained rate for two minutes,
then drained. No leak (RSS growth < 10 %, no more open files or threads than after warm-up), the
queue drains, and every acknowledged image has its results. ``bench/soak.py`` is the long run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.node_process import require_models
from tests.peers import Orthanc
from tests.soak import run_soak

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.integration]


def test_two_minutes_at_twice_the_sustained_rate_leaks_nothing_and_loses_nothing(
    tmp_path: Path, orthanc: Orthanc
) -> None:
    require_models("lumbar")
    report = run_soak(
        tmp_path, orthanc, minutes=2.0, factor=2.0, pool_size=8, max_side=320, sample_s=5, drain_timeout_s=900
    )
    summary = report.summary()
    assert report.sent > 0 and report.refused == 0, summary
    assert report.drained, summary
    assert report.missing_results == [], (summary, report.missing_results[:5])
    assert report.baseline is not None and report.end is not None
    assert report.end.rss_mib < 1.10 * report.baseline.rss_mib, summary
    assert report.end.open_files <= report.baseline.open_files, summary
    assert report.end.threads <= report.baseline.threads, summary
    assert set(report.jobs_by_state) == {"succeeded"}, summary
