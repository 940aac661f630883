"""Accepted SOP classes and transfer syntaxes (the presentation contexts the node offers).

A compressed transfer syntax is offered only when pydicom can decode it *in this process*
(``pydicom.pixels.get_decoder(ts).is_available``: at least one installed plugin such as
pylibjpeg, GDCM, pyjpegls or Pillow). An SCU proposing an image in a syntax without a decoder
gets that presentation context rejected ("transfer syntaxes not supported") at association
negotiation, so it can convert the image or report "no presentation context" - instead of the
node accepting an image no worker can read.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
)
from pynetdicom.sop_class import uid_to_sop_class

__all__ = [
    "COMPRESSED_CANDIDATES",
    "NATIVE_TRANSFER_SYNTAXES",
    "STORAGE_SOP_CLASSES",
    "SyntaxSupport",
    "decoder_status",
    "syntax_support",
]

#: Storage SOP classes accepted (SCP role).
STORAGE_SOP_CLASSES: dict[str, str] = {
    str(uid): uid.name
    for uid in (
        ComputedRadiographyImageStorage,
        DigitalXRayImageStorageForPresentation,
        DigitalXRayImageStorageForProcessing,
        SecondaryCaptureImageStorage,
        MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
        MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    )
}

VERIFICATION_SOP_CLASS = str(uid_to_sop_class("1.2.840.10008.1.1"))  # Verification SOP Class

#: Uncompressed syntaxes: always accepted (pydicom reads them natively; deflate uses zlib).
NATIVE_TRANSFER_SYNTAXES: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)

#: Compressed syntaxes accepted when a decoder is available, in order of preference.
COMPRESSED_CANDIDATES: tuple[str, ...] = (
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, First-Order Prediction (Process 14 SV1)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless Only
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.201",  # High-Throughput JPEG 2000 Lossless Only
    "1.2.840.10008.1.2.4.202",  # High-Throughput JPEG 2000 with RPCL Options Lossless Only
    "1.2.840.10008.1.2.4.203",  # High-Throughput JPEG 2000
    "1.2.840.10008.1.2.4.110",  # JPEG XL Lossless
    "1.2.840.10008.1.2.4.111",  # JPEG XL JPEG Recompression
    "1.2.840.10008.1.2.4.112",  # JPEG XL
)


def decoder_status(transfer_syntax: str) -> tuple[bool, str]:
    """Whether pydicom can decode pixel data in ``transfer_syntax`` in this process.

    Returns
    -------
    (available, detail)
        ``detail`` names the available plugins, or says what is missing.
    """
    ts = UID(transfer_syntax)
    if not ts.is_compressed:
        return True, "native"
    try:
        from pydicom.pixels import get_decoder

        decoder = get_decoder(ts)
    except NotImplementedError:
        return False, "pydicom has no decoder for this transfer syntax"
    except Exception as exc:  # pragma: no cover - defensive: a broken plugin must not stop the node
        return False, f"decoder lookup failed ({type(exc).__name__})"
    if decoder.is_available:
        return True, "plugins: " + ", ".join(sorted(decoder.available_plugins))
    missing = "; ".join(decoder.missing_dependencies)  # e.g. "gdcm - requires gdcm>=3.0.10"
    return False, f"no decoder plugin installed ({missing})" if missing else "no decoder plugin installed"


@dataclass(frozen=True)
class SyntaxSupport:
    """The transfer syntaxes the node offers, and the refused candidates with the reason."""

    accepted: tuple[str, ...]
    refused: dict[str, str]

    def describe(self) -> list[str]:
        """Lines ``<uid> <name>: accepted|refused (<detail>)`` for logs and ``cdss config``."""
        lines = [f"{uid} {UID(uid).name}: accepted" for uid in self.accepted]
        lines += [f"{uid} {UID(uid).name}: refused ({why})" for uid, why in self.refused.items()]
        return lines


def syntax_support() -> SyntaxSupport:
    """Decide, at start-up, which transfer syntaxes to offer (see module docstring)."""
    accepted = list(NATIVE_TRANSFER_SYNTAXES)
    refused: dict[str, str] = {}
    for ts in COMPRESSED_CANDIDATES:
        ok, detail = decoder_status(ts)
        if ok:
            accepted.append(ts)
        else:
            refused[ts] = detail
    return SyntaxSupport(tuple(accepted), refused)
