"""Dashboard thumbnails: a job's source image with its findings drawn from the stored GSPS / SEG.

The drawing is :func:`cdss.render.render_files` (the same code as ``cdss render``), applied to the
result objects the job produced; a job without results (queued, not applicable, dead) shows the
source image alone.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import pydicom
from sqlalchemy import select
from sqlalchemy.orm import Session

from cdss.analysis.imaging import resize_longest
from cdss.config import Settings
from cdss.db.models import Instance, Job, Result
from cdss.render import RenderError, render_files, source_display_u8
from cdss.store import Spool

__all__ = ["ThumbnailError", "render_thumbnail"]


class ThumbnailError(RuntimeError):
    """The source image cannot be read or decoded; the message says why (no patient data)."""


def _read(spool: Spool, key: str) -> pydicom.Dataset:
    data = spool.read(key)
    return pydicom.dcmread(io.BytesIO(data), force=True)


def _png(rgb: np.ndarray, size: int) -> bytes:
    img = resize_longest(rgb, size)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ThumbnailError("PNG encoding failed")
    return buf.tobytes()


def render_thumbnail(session: Session, settings: Settings, job_id: int, size: int) -> tuple[bytes, bool]:
    """PNG bytes of the job's image (longest side ``size`` pixels) and whether findings are drawn."""
    row = session.execute(
        select(Instance.spool_key, Instance.id)
        .join(Job, Job.instance_id == Instance.id)
        .where(Job.id == job_id)
    ).first()
    if row is None:
        raise ThumbnailError(f"job {job_id} has no instance")
    spool = Spool(settings.storage)
    try:
        source = _read(spool, row.spool_key)
    except (OSError, ValueError) as exc:
        raise ThumbnailError(
            f"instance {row.id} is not readable from the spool ({type(exc).__name__})"
        ) from exc
    results = session.execute(
        select(Result.kind, Result.spool_key).where(Result.job_id == job_id, Result.kind.in_(["GSPS", "SEG"]))
    ).all()
    gsps: list[pydicom.Dataset] = []
    segs: list[pydicom.Dataset] = []
    for kind, key in results:
        try:
            (gsps if kind == "GSPS" else segs).append(_read(spool, key))
        except (OSError, ValueError):
            continue
    try:
        if gsps or segs:
            # GSPS carries outlines and labelled measurements; fall back to SEG outlines alone.
            try:
                rgb = render_files(source, gsps=gsps) if gsps else render_files(source, segs=segs)
                return _png(rgb, size), True
            except (RenderError, ValueError):
                pass
        grey = source_display_u8(source)
        return _png(np.repeat(grey[..., None], 3, axis=2), size), False
    except ValueError as exc:  # PixelDataError is a ValueError
        raise ThumbnailError(f"instance {row.id} cannot be decoded: {exc}") from exc
