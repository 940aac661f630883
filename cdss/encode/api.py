"""``encode_results``: a result and its source image in, DICOM result objects out (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.dataset import Dataset

from cdss.analysis.pixels import PixelDataError
from cdss.analysis.types import CervicalResult, LumbarResult
from cdss.config import ResultSettings, SegProfile
from cdss.encode.common import AnyResult, EncodeContext, EncodedObject, EncodeError, ResultKind
from cdss.encode.gsps import encode_gsps
from cdss.encode.overlay import Overlay, build_overlay
from cdss.encode.sc import encode_sc
from cdss.encode.seg import encode_seg
from cdss.encode.sr import encode_sr

__all__ = ["encode_results", "overlay_for_context"]


def overlay_for_context(ctx: EncodeContext) -> Overlay:
    """The overlay (GSPS graphics = SC drawing) for the context's result, with its tracking UIDs."""
    return build_overlay(
        ctx.result,
        header=ctx.caution_lines(),
        vertebra_uid=ctx.vertebra_uid,
        level_uid=ctx.level_uid,
        finding_uid=ctx.finding_uid,
    )


def encode_results(
    source_ds: Dataset,
    result: AnyResult,
    settings: ResultSettings,
    *,
    include_sc: bool = False,
    seg_profiles: Sequence[SegProfile] | None = None,
) -> list[EncodedObject]:
    """Encode one analysis result as DICOM objects referencing ``source_ds``.

    Parameters
    ----------
    source_ds
        The instance the results reference (FOR PRESENTATION when both exist; the caller picks
        it). Only its header is needed, except for the Secondary Capture, which decodes its
        pixels. Its Rows/Columns must equal ``result.image_shape``.
    result
        :class:`LumbarResult` (lateral or AP) or :class:`CervicalResult`.
    settings
        ``settings.results`` (manufacturer, research labelling, series numbers).
    include_sc
        Also produce the burned-in Secondary Capture (for destinations with ``send_sc``).
    seg_profiles
        The SEG profiles wanted (one SEG each, in this order); None = ``settings.seg_profile``
        only. A profile other than ``settings.seg_profile`` gets its own series (see
        :func:`cdss.encode.seg.encode_seg`). Repeated profiles are written once.

    Returns
    -------
    list[EncodedObject]
        In this order, each only when it applies: SEG, one per profile (lumbar results with at
        least one vertebra), SR (always), GSPS (always), SC (``include_sc``). All objects share the
        study of the source, are each in a new series and share tracking UIDs.

    Raises
    ------
    EncodeError
        The source cannot be referenced (missing UIDs, multi-frame, not greyscale) or does not
        match the result's image shape; for the SC also when its pixels cannot be decoded.
    """
    if not isinstance(result, LumbarResult | CervicalResult):
        raise EncodeError(f"cannot encode a {type(result).__name__}; expected LumbarResult or CervicalResult")
    ctx = EncodeContext(source_ds, result, settings)
    objects: list[EncodedObject] = []
    if isinstance(result, LumbarResult):
        profiles = list(dict.fromkeys(SegProfile(p) for p in (seg_profiles or [settings.seg_profile])))
        for profile in profiles:
            seg = encode_seg(ctx, profile)
            if seg is None:
                break  # no vertebrae: no SEG in any profile
            objects.append(EncodedObject(ResultKind.SEG, seg, seg_profile=profile))
    objects.append(EncodedObject(ResultKind.SR, encode_sr(ctx)))
    overlay = overlay_for_context(ctx)
    objects.append(EncodedObject(ResultKind.GSPS, encode_gsps(ctx, overlay)))
    if include_sc:
        try:
            sc = encode_sc(ctx, overlay)
        except PixelDataError as exc:
            raise EncodeError(f"cannot make the Secondary Capture: {exc}") from exc
        objects.append(EncodedObject(ResultKind.SC, sc))
    return objects
