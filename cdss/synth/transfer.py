"""Transfer syntaxes for the generated files (``--transfer-syntax``).

Lossless encodings use pydicom 3's encoders (``Dataset.compress``: RLE via pydicom/pylibjpeg-rle,
JPEG-LS via pyjpegls, JPEG 2000 via pylibjpeg-openjpeg). JPEG Baseline has no pydicom encoder:
the image is reduced to 8 bits, encoded by OpenCV's libjpeg and encapsulated with
:func:`pydicom.encaps.encapsulate`. Deflated Explicit VR Little Endian is written by pydicom.
"""

from __future__ import annotations

from enum import StrEnum

import cv2
import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

__all__ = ["TransferSyntax", "apply_transfer_syntax"]


class TransferSyntax(StrEnum):
    """Names accepted by ``--transfer-syntax``."""

    EXPLICIT = "explicit"
    RLE = "rle"
    JPEG_LS = "jpegls"
    JPEG_2000 = "j2k"
    JPEG_BASELINE = "jpeg"
    DEFLATED = "deflate"

    @property
    def uid(self) -> UID:
        return {
            TransferSyntax.EXPLICIT: ExplicitVRLittleEndian,
            TransferSyntax.RLE: RLELossless,
            TransferSyntax.JPEG_LS: JPEGLSLossless,
            TransferSyntax.JPEG_2000: JPEG2000Lossless,
            TransferSyntax.JPEG_BASELINE: JPEGBaseline8Bit,
            TransferSyntax.DEFLATED: DeflatedExplicitVRLittleEndian,
        }[self]


def _to_8bit(ds: Dataset) -> np.ndarray:
    """Rescale the stored values to 8 bits (window values follow)."""
    arr = ds.pixel_array.astype(np.float64)
    maxv = float((1 << int(ds.BitsStored)) - 1)
    factor = 255.0 / maxv
    out = np.clip(np.rint(arr * factor), 0, 255).astype(np.uint8)
    if "WindowCenter" in ds:
        ds.WindowCenter = round(float(ds.WindowCenter) * factor, 2)
        ds.WindowWidth = max(2.0, round(float(ds.WindowWidth) * factor, 2))
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    return out


def apply_transfer_syntax(ds: Dataset, syntax: TransferSyntax | str) -> Dataset:
    """Re-encode ``ds`` (uncompressed, little endian) in place for ``syntax`` and return it."""
    ts = TransferSyntax(syntax)
    if ts is TransferSyntax.EXPLICIT:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    elif ts is TransferSyntax.DEFLATED:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    elif ts is TransferSyntax.JPEG_BASELINE:
        img = _to_8bit(ds)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:  # pragma: no cover - OpenCV always encodes 8-bit greyscale
            raise RuntimeError("OpenCV could not JPEG-encode the image")
        data = buf.tobytes()
        ds.PixelData = encapsulate([data])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionRatio = round(img.size / len(data), 2)
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        # lossy compression makes a new instance (reproducibly derived from the original UID)
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[str(ds.SOPInstanceUID), "jpeg-baseline"])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.DerivationDescription = (
            "Lossy JPEG baseline compression of a 12-16 bit original, rescaled to 8 bit"
        )
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    else:
        ds.compress(ts.uid, generate_instance_uid=False)  # lossless re-encoding: same instance
    return ds
