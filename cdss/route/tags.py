"""Normalising the tags that say what an X-ray shows: body region, projection and side.

Real-world headers are inconsistent: ``BodyPartExamined`` is written as ``LSPINE``, ``L-SPINE``,
``Lumbar spine``, ``LWS`` (German) or left empty; views come as ``ViewPosition`` defined terms,
SNOMED codes in ``ViewCodeSequence`` (CID 4010 "DX View", current SCT or legacy SRT codes) or only
in free-text series descriptions. The functions here turn all of that into three small enums;
:mod:`cdss.route.rules` decides the analysis from them.

Free text is tokenised: upper-cased, German umlauts folded (``Ä`` → ``AE``), every character
that is not a letter or digit becomes a separator. Keywords are matched as whole token sequences,
so ``L-SPINE`` and ``L SPINE`` are the same and ``PLAT`` does not contain ``LAT``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sr._snomed_dict import mapping as _SNOMED_MAPPING
from pydicom.sr.codedict import codes

from cdss.analysis.types import Laterality

__all__ = [
    "BodyRegion",
    "Evidence",
    "View",
    "body_region",
    "body_region_evidence",
    "oblique_laterality",
    "orientation_view",
    "projection",
    "projection_evidence",
    "tag_text",
    "text_tokens",
    "views_compatible",
]


class BodyRegion(StrEnum):
    """Normalised body region; values are the DICOM ``BodyPartExamined`` defined terms."""

    LSPINE = "LSPINE"
    CSPINE = "CSPINE"
    TSPINE = "TSPINE"
    SPINE = "SPINE"  # whole or unspecified spine
    OTHER = "OTHER"  # a recognised non-spine region (CHEST, KNEE, ...)


class View(StrEnum):
    """Normalised projection of a radiograph."""

    LAT = "LAT"
    AP = "AP"
    PA = "PA"
    OBL = "OBL"


@dataclass(frozen=True)
class Evidence:
    """A normalised value and where it came from (for the route reason).

    ``source`` names the tag (and its value for coded/defined-term tags, e.g.
    ``ViewPosition='LL'``; free-text tags are named without their text, e.g.
    ``SeriesDescription keywords``, since descriptions may hold anything). ``tag`` is the bare
    keyword (``ViewPosition``), used to compare sources.
    """

    value: Any
    source: str
    tag: str = ""


# --------------------------------------------------------------------------- text


def _fold(text: str) -> str:
    text = text.upper()
    for src, dst in (("Ä", "AE"), ("Ö", "OE"), ("Ü", "UE"), ("ß", "SS")):
        text = text.replace(src, dst)
    # Strip the remaining accents (é → E, ñ → N).
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return text


def text_tokens(text: str | None) -> tuple[str, ...]:
    """Upper-case alphanumeric tokens of ``text`` (umlauts folded, accents stripped)."""
    if not text:
        return ()
    folded = _fold(str(text))
    cleaned = "".join(c if c.isalnum() else " " for c in folded)
    return tuple(cleaned.split())


def _contains(tokens: Sequence[str], phrase: Sequence[str]) -> bool:
    n = len(phrase)
    return any(tuple(tokens[i : i + n]) == tuple(phrase) for i in range(len(tokens) - n + 1))


def _first_match(tokens: Sequence[str], phrases: Iterable[tuple[str, ...]]) -> tuple[str, ...] | None:
    for phrase in phrases:
        if _contains(tokens, phrase):
            return phrase
    return None


def _phrases(*texts: str) -> tuple[tuple[str, ...], ...]:
    # Longest phrases first so that "LUMBAR SPINE" wins over "SPINE".
    out = {text_tokens(t) for t in texts}
    return tuple(sorted(out, key=len, reverse=True))


def tag_text(ds: Dataset, keyword: str) -> str | None:
    try:
        value = ds.get(keyword)
    except Exception:  # a malformed value must not break routing
        return None
    if value is None:
        return None
    if not isinstance(value, str) and hasattr(value, "__iter__"):
        try:
            value = "\\".join(str(v) for v in value)
        except TypeError:
            value = str(value)
    text = str(value).strip()
    return text or None


#: Description-like tags searched (in this order) when the structured tags say nothing.
TEXT_TAGS = (
    "SeriesDescription",
    "ProtocolName",
    "PerformedProcedureStepDescription",
    "RequestedProcedureDescription",
    "StudyDescription",
    "AcquisitionDeviceProcessingDescription",
)

# --------------------------------------------------------------------------- body region

_LUMBAR = _phrases(
    "LSPINE",
    "L SPINE",
    "LUMBAR",
    "LUMBAR SPINE",
    "LUMBOSACRAL",
    "LUMBOSACRAL SPINE",
    "LS SPINE",
    "L S SPINE",
    "LSP",
    "LWS",  # Lendenwirbelsaeule
    "LENDENWIRBELSAEULE",
    "COLUMNA LUMBAR",  # es / pt
    "COLUNA LOMBAR",
    "RACHIS LOMBAIRE",  # fr
    "LOMBAIRE",
    "COLONNA LOMBARE",  # it
    "RACHIDE LOMBARE",
    "LOMBARE",
    "LUMBALE",
)
_CERVICAL = _phrases(
    "CSPINE",
    "C SPINE",
    "CERVICAL",
    "CERVICAL SPINE",
    "CSP",
    "HWS",  # Halswirbelsaeule
    "HALSWIRBELSAEULE",
    "COLUMNA CERVICAL",
    "COLUNA CERVICAL",
    "RACHIS CERVICAL",
    "CERVICALE",
    "COLONNA CERVICALE",
    "RACHIDE CERVICALE",
)
_THORACIC = _phrases(
    "TSPINE",
    "T SPINE",
    "THORACIC SPINE",
    "DORSAL SPINE",
    "DSPINE",
    "BWS",  # Brustwirbelsaeule
    "COLUMNA DORSAL",
    "COLUMNA TORACICA",
    "RACHIS DORSAL",
)
_WHOLE_SPINE = _phrases("SPINE", "WHOLE SPINE", "WIRBELSAEULE", "COLUMNA", "RACHIS", "SCOLIOSIS")
# "NECK" is the defined term for the cervical region, but in free text it is also the femoral,
# humeral or tooth neck: only trust it without these neighbours.
_NECK = ("NECK",)
_NOT_CERVICAL_NECK = frozenset({"FEMUR", "FEMORAL", "FEMORIS", "HIP", "HUMERUS", "HUMERAL", "TOOTH", "RIB"})

#: BodyPartExamined defined terms (PS3.16 Annex L) that are clearly not spine.
_OTHER_TERMS = frozenset(
    {
        "ABDOMEN",
        "ANKLE",
        "ARM",
        "BREAST",
        "CHEST",
        "CLAVICLE",
        "COCCYX",
        "ELBOW",
        "EXTREMITY",
        "FOOT",
        "HAND",
        "HEAD",
        "HEART",
        "HIP",
        "JAW",
        "KNEE",
        "LEG",
        "PELVIS",
        "SACRUM",
        "SHOULDER",
        "SKULL",
        "THUMB",
        "WRIST",
        "FINGER",
        "TOE",
        "SINUS",
        "TMJ",
        "ORBIT",
        "THORAX",
        "RIB",
        "RIBS",
        "FEMUR",
        "TIBIA",
        "HUMERUS",
        "FOREARM",
        "HEEL",
        "SSPINE",  # sacrum; not handled
        "LUNG",
        "BRAIN",
        "KIDNEY",
        "FACE",
        "NOSE",
        "MANDIBLE",
    }
)

#: Anatomic Region Sequence codes (SNOMED CT, with the legacy SRT codes) for spine regions.
_REGION_CODES: dict[str, BodyRegion] = {}


def _add_region_code(sct: str, region: BodyRegion) -> None:
    _REGION_CODES[f"SCT:{sct}"] = region
    srt = _SNOMED_MAPPING["SCT"].get(sct)
    if srt:
        _REGION_CODES[f"SRT:{srt}"] = region


_add_region_code("122496007", BodyRegion.LSPINE)  # Lumbar spine
_add_region_code("122494005", BodyRegion.CSPINE)  # Cervical spine
_add_region_code("122495006", BodyRegion.TSPINE)  # Thoracic spine
_add_region_code("421060004", BodyRegion.SPINE)  # Spine
_add_region_code("280717001", BodyRegion.SPINE)  # Vertebral column
_add_region_code("45048000", BodyRegion.CSPINE)  # Neck


def _region_from_tokens(tokens: Sequence[str]) -> BodyRegion | None:
    if not tokens:
        return None
    if _first_match(tokens, _LUMBAR):
        return BodyRegion.LSPINE
    if _first_match(tokens, _CERVICAL):
        return BodyRegion.CSPINE
    if _contains(tokens, _NECK) and not _NOT_CERVICAL_NECK.intersection(tokens):
        return BodyRegion.CSPINE
    if _first_match(tokens, _THORACIC):
        return BodyRegion.TSPINE
    if _first_match(tokens, _WHOLE_SPINE):
        return BodyRegion.SPINE
    return None


def _code_key(item: Dataset) -> str | None:
    value = tag_text(item, "CodeValue")
    scheme = (tag_text(item, "CodingSchemeDesignator") or "").upper()
    if not value:
        return None
    if scheme in ("SNM3", "99SDM"):
        scheme = "SRT"
    return f"{scheme}:{value}"


def _sequence(ds: Dataset, keyword: str) -> list[Dataset]:
    try:
        seq = ds.get(keyword)
    except Exception:
        return []
    if not seq:
        return []
    try:
        return [item for item in seq if isinstance(item, Dataset)]
    except TypeError:
        return []


def body_region_evidence(ds: Dataset) -> list[Evidence]:
    """Every body region the header states, one per source, in order of precedence.

    Sources: ``BodyPartExamined`` (a recognised term, including a non-spine one, or a generic
    spine word), the first ``AnatomicRegionSequence`` code that names a spine region, and the
    first description tag of :data:`TEXT_TAGS` that names a region. Used to find headers that
    contradict themselves; :func:`body_region` picks the deciding one.
    """
    out: list[Evidence] = []
    bpe = tag_text(ds, "BodyPartExamined")
    if bpe:
        tokens = text_tokens(bpe)
        region = _region_from_tokens(tokens)
        if region is None and ("".join(tokens) in _OTHER_TERMS or _OTHER_TERMS.intersection(tokens)):
            region = BodyRegion.OTHER
        if region is not None:
            out.append(Evidence(region, f"BodyPartExamined={bpe!r}", "BodyPartExamined"))
    for item in _sequence(ds, "AnatomicRegionSequence"):
        key = _code_key(item)
        region = _REGION_CODES.get(key or "")
        if region is not None:
            out.append(Evidence(region, f"AnatomicRegionSequence={key}", "AnatomicRegionSequence"))
            break
    for keyword in TEXT_TAGS:
        region = _region_from_tokens(text_tokens(tag_text(ds, keyword)))
        if region is not None:
            out.append(Evidence(region, f"{keyword} keywords", keyword))
            break
    return out


def body_region(ds: Dataset) -> Evidence | None:
    """The body region of an image.

    Order: ``BodyPartExamined`` (a recognised term wins, including a non-spine one), then
    ``AnatomicRegionSequence`` codes, then the description tags of :data:`TEXT_TAGS`. A generic
    ``SPINE`` is refined by a more specific source when one exists.

    Returns
    -------
    Evidence | None
        ``Evidence(BodyRegion, source)`` or ``None`` when nothing recognisable is present.
    """
    generic: Evidence | None = None
    bpe = tag_text(ds, "BodyPartExamined")
    if bpe:
        tokens = text_tokens(bpe)
        region = _region_from_tokens(tokens)
        if region is None and ("".join(tokens) in _OTHER_TERMS or _OTHER_TERMS.intersection(tokens)):
            return Evidence(BodyRegion.OTHER, f"BodyPartExamined={bpe!r}", "BodyPartExamined")
        if region is not None and region is not BodyRegion.SPINE:
            return Evidence(region, f"BodyPartExamined={bpe!r}", "BodyPartExamined")
        if region is BodyRegion.SPINE:
            generic = Evidence(region, f"BodyPartExamined={bpe!r}", "BodyPartExamined")
    for item in _sequence(ds, "AnatomicRegionSequence"):
        key = _code_key(item)
        region = _REGION_CODES.get(key or "")
        if region is not None and region is not BodyRegion.SPINE:
            return Evidence(region, f"AnatomicRegionSequence={key}", "AnatomicRegionSequence")
        if region is BodyRegion.SPINE and generic is None:
            generic = Evidence(region, f"AnatomicRegionSequence={key}", "AnatomicRegionSequence")
    for keyword in TEXT_TAGS:
        text = tag_text(ds, keyword)
        region = _region_from_tokens(text_tokens(text))
        if region is not None and region is not BodyRegion.SPINE:
            return Evidence(region, f"{keyword} keywords", keyword)
        if region is BodyRegion.SPINE and generic is None:
            generic = Evidence(region, f"{keyword} keywords", keyword)
    return generic


# --------------------------------------------------------------------------- view

_VIEW_POSITION: dict[str, View] = {
    "AP": View.AP,
    "PA": View.PA,
    "LL": View.LAT,  # left lateral
    "RL": View.LAT,  # right lateral
    "LAT": View.LAT,
    "LATERAL": View.LAT,
    "LLAT": View.LAT,
    "RLAT": View.LAT,
    "LAO": View.OBL,
    "RAO": View.OBL,
    "LPO": View.OBL,
    "RPO": View.OBL,
    "RLO": View.OBL,  # right lateral oblique
    "LLO": View.OBL,
    "OBL": View.OBL,
    "OBLIQUE": View.OBL,
    # RLD / LLD (lateral decubitus) are horizontal-beam AP/PA views of a patient lying on the
    # side: deliberately not mapped.
}


def _cid4010_view(name: str) -> View | None:
    lowered = name.lower()
    if "oblique" in lowered or name in ("LeftAnteriorOblique", "RightAnteriorOblique"):
        return View.OBL
    if name in (
        "LateralProjection",
        "LeftLateral",
        "RightLateral",
        "LateralMedial",
        "MedioLateralProjection",
    ):
        return View.LAT
    if name == "AnteroPosterior":
        return View.AP
    if name == "PosteroAnterior":
        return View.PA
    return None


#: ``SCHEME:value`` → (view, side named by the code or None) for CID 4010 "DX View".
_VIEW_CODES: dict[str, tuple[View, str | None]] = {}


def _side_of(name: str) -> str | None:
    if name.startswith("Left"):
        return "L"
    if name.startswith("Right"):
        return "R"
    return None


for _name in codes.cid4010.dir():
    _code = getattr(codes.cid4010, _name)
    _view = _cid4010_view(_name)
    if _view is None:
        continue
    _entry = (_view, _side_of(_name) if _view is View.OBL else None)
    _VIEW_CODES[f"{_code.scheme_designator}:{_code.value}"] = _entry
    _srt = _SNOMED_MAPPING["SCT"].get(_code.value)
    if _srt:
        _VIEW_CODES[f"SRT:{_srt}"] = _entry
# Legacy SRT code for postero-anterior still written by older DX units.
_VIEW_CODES.setdefault("SRT:R-10214", (View.PA, None))

#: Anterior obliques show the foramina nearer the detector (RAO → right); posterior obliques
#: show the foramina farther from it (LPO → right).
_OBLIQUE_SIDE = {"RAO": "R", "LAO": "L", "LPO": "R", "RPO": "L", "RLO": "R", "LLO": "L"}
_OBLIQUE_CODE_SIDE = {
    "RightAnteriorOblique": "R",
    "LeftAnteriorOblique": "L",
    "LeftPosteriorOblique": "R",
    "RightPosteriorOblique": "L",
    "RightOblique": "R",
    "LeftOblique": "L",
}
_CODE_SIDE: dict[str, str] = {}
for _name, _side in _OBLIQUE_CODE_SIDE.items():
    _code = getattr(codes.cid4010, _name)
    _CODE_SIDE[f"SCT:{_code.value}"] = _side
    _srt = _SNOMED_MAPPING["SCT"].get(_code.value)
    if _srt:
        _CODE_SIDE[f"SRT:{_srt}"] = _side

_TEXT_OBL = _phrases(
    "OBL",
    "OBLIQUE",
    "OBLIQUA",
    "OBLIQUO",
    "OBLICUA",
    "OBLICUO",
    "SCHRAEG",
    "SCHRAG",
    "SCHR",
    "OBLIK",
    "OBLIQUES",
)
_TEXT_LAT = _phrases(
    "LAT",
    "LATERAL",
    "LATERALE",
    "LATERAUX",
    "SEITLICH",
    "SEITL",
    "PERFIL",
    "PROFIL",
    "PROFILE",
    "LATFLEX",
    "LATEXT",
)
_TEXT_AP = _phrases("AP", "A P", "ANTEROPOSTERIOR", "ANTERO POSTERIOR", "FRONTAL", "FACE")
_TEXT_PA = _phrases("PA", "P A", "POSTEROANTERIOR", "POSTERO ANTERIOR")
_TEXT_OBLIQUE_VP = _phrases("LAO", "RAO", "LPO", "RPO")


def _view_from_tokens(tokens: Sequence[str]) -> View | None:
    if not tokens:
        return None
    if _first_match(tokens, _TEXT_OBL) or _first_match(tokens, _TEXT_OBLIQUE_VP):
        return View.OBL
    lat = _first_match(tokens, _TEXT_LAT) is not None
    ap = _first_match(tokens, _TEXT_AP) is not None
    pa = _first_match(tokens, _TEXT_PA) is not None
    if lat and not (ap or pa):
        return View.LAT
    if (ap or pa) and not lat:
        return View.PA if pa and not ap else View.AP
    return None  # nothing, or "AP + LAT" (a two-view series description): ambiguous


_PO_AXIS = {"A": "AP", "P": "AP", "R": "LR", "L": "LR", "H": "HF", "F": "HF"}


def orientation_view(ds: Dataset) -> Evidence | None:
    """The projection implied by ``PatientOrientation`` (0020,0020).

    The two values are the patient directions of the image rows (left → right) and columns
    (top → bottom), each one or more of ``A P R L H F``, the dominant direction first
    (PS3.3 C.7.6.1.1.1). One of the two must run along the body (``H``/``F`` first); the other,
    the *transverse* direction, gives the view:

    ========================  ===========  ==========================================
    transverse direction       view         examples (rows\\columns)
    ========================  ===========  ==========================================
    only ``A``/``P``           lateral      ``P\\F``, ``A\\F``, ``A\\H``, ``F\\P`` (turned 90°)
    only ``R``/``L``           AP (frontal) ``R\\F``, ``L\\F`` (AP and PA alike: the
                                            display flip decides ``L`` vs ``R``, not the beam)
    both (``AL``, ``PR``, …)   oblique      ``AL\\F``, ``LP\\F`` (either order)
    ========================  ===========  ==========================================

    A trailing ``H``/``F`` in the transverse value (a tilted image, e.g. ``PF``) is ignored.
    Anything else — empty, one value, unknown letters, no value along the body (an axial
    image), both along the body — says nothing (``None``).

    Returns
    -------
    Evidence | None
        ``Evidence(View, "PatientOrientation='P\\F'", "PatientOrientation")`` or ``None``.
    """
    raw = tag_text(ds, "PatientOrientation")
    if not raw:
        return None
    values = [v.strip().upper() for v in raw.split("\\")]
    if len(values) != 2 or not all(values) or any(c not in _PO_AXIS for v in values for c in v):
        return None
    along = [v[0] in "HF" for v in values]
    if along[0] == along[1]:
        return None
    transverse = values[1] if along[0] else values[0]
    axes = {_PO_AXIS[c] for c in transverse if _PO_AXIS[c] != "HF"}
    if axes == {"AP"}:
        view = View.LAT
    elif axes == {"LR"}:
        view = View.AP
    elif axes == {"AP", "LR"}:
        view = View.OBL
    else:
        return None
    return Evidence(view, f"PatientOrientation='{raw}'", "PatientOrientation")


def projection_evidence(ds: Dataset) -> list[Evidence]:
    """Every projection the header states, one per source, in order of precedence.

    Sources: ``ViewCodeSequence`` (CID 4010 SNOMED codes, current SCT or legacy SRT, then its
    code meaning), ``ViewPosition``, ``PatientOrientation`` (:func:`orientation_view`), then the
    first description tag of :data:`TEXT_TAGS` that names one view (a description naming two
    views, "AP + LAT", is ambiguous and skipped).
    """
    out: list[Evidence] = []
    for item in _sequence(ds, "ViewCodeSequence"):
        key = _code_key(item)
        if key and key in _VIEW_CODES:
            out.append(Evidence(_VIEW_CODES[key][0], f"ViewCodeSequence={key}", "ViewCodeSequence"))
            break
        view = _view_from_tokens(text_tokens(tag_text(item, "CodeMeaning")))
        if view is not None:
            out.append(Evidence(view, "ViewCodeSequence meaning", "ViewCodeSequence"))
            break
    vp = tag_text(ds, "ViewPosition")
    if vp:
        compact = "".join(text_tokens(vp))
        view = _VIEW_POSITION.get(compact) or _view_from_tokens(text_tokens(vp))
        if view is not None:
            out.append(Evidence(view, f"ViewPosition={vp!r}", "ViewPosition"))
    po = orientation_view(ds)
    if po is not None:
        out.append(po)
    for keyword in TEXT_TAGS:
        view = _view_from_tokens(text_tokens(tag_text(ds, keyword)))
        if view is not None:
            out.append(Evidence(view, f"{keyword} keywords", keyword))
            break
    return out


def projection(ds: Dataset) -> Evidence | None:
    """The projection of an image: the first of :func:`projection_evidence`.

    Order: ``ViewCodeSequence`` (CID 4010 SNOMED codes, current SCT or legacy SRT, then its
    code meaning), ``ViewPosition``, ``PatientOrientation``, then the description tags of
    :data:`TEXT_TAGS`. A description naming two views ("AP + LAT") is ambiguous and ignored.
    An oblique named by a description refines a lateral or frontal ``PatientOrientation``
    (modalities often write only the dominant direction of an oblique).
    """
    found = projection_evidence(ds)
    if not found:
        return None
    first = found[0]
    if first.tag == "PatientOrientation" and first.value is not View.OBL:
        # modalities often write only the dominant direction of an oblique: a later "oblique"
        # (in a description) refines a lateral or frontal PatientOrientation
        oblique = [e for e in found[1:] if e.value is View.OBL]
        if oblique:
            return oblique[0]
    return first


def views_compatible(a: Evidence, b: Evidence) -> bool:
    """Whether two stated projections can describe the same image.

    Equal views agree; AP and PA agree (the same analysis); an oblique agrees with a lateral or
    frontal ``PatientOrientation`` (modalities often write only the dominant direction of an
    oblique). Anything else (lateral vs AP, oblique named by one tag and lateral by another
    naming tag) is a contradiction.
    """
    va, vb = a.value, b.value
    if va == vb or {va, vb} <= {View.AP, View.PA}:
        return True
    if View.OBL in (va, vb):
        return "PatientOrientation" in (a.tag, b.tag)
    return False


# --------------------------------------------------------------------------- laterality

_RIGHT_WORDS = _phrases("RT", "RIGHT", "R", "RECHTS", "RE", "DERECHA", "DERECHO", "DROITE", "DESTRA")
_LEFT_WORDS = _phrases("LT", "LEFT", "L", "LINKS", "LI", "IZQUIERDA", "IZQUIERDO", "GAUCHE", "SINISTRA")


def _side_from_text(tokens: Sequence[str]) -> str | None:
    for vp, side in _OBLIQUE_SIDE.items():
        if vp in tokens:
            return side
    # Only look at words next to the oblique keyword when there is one ("LT OBL", "OBL RT");
    # otherwise anywhere (e.g. "RIGHT" in a protocol name of an oblique view).
    window: Sequence[str] = tokens
    for i, tok in enumerate(tokens):
        if (tok,) in _TEXT_OBL:
            window = tokens[max(0, i - 2) : i + 3]
            break
    right = any(_contains(window, p) for p in _RIGHT_WORDS)
    left = any(_contains(window, p) for p in _LEFT_WORDS)
    if right and not left:
        return "R"
    if left and not right:
        return "L"
    return None


def oblique_laterality(ds: Dataset) -> Evidence | None:
    """The side of the foramina an oblique cervical view shows.

    Order: ``ViewPosition`` (RAO/LAO/RPO/LPO, RLO/LLO), ``ViewCodeSequence`` oblique codes,
    ``ImageLaterality`` / ``Laterality`` (``L``/``R``), then keywords in the description tags
    ("OBL RT", "LT OBL", "RIGHT OBLIQUE", German "SCHRAEG RE"). Anterior obliques show the
    foramina nearer the detector, posterior obliques the farther ones: RAO and LPO → right,
    LAO and RPO → left.

    Returns
    -------
    Evidence | None
        ``Evidence(Laterality, source)``; ``None`` when unknown (the cervical model infers it).
    """
    vp = tag_text(ds, "ViewPosition")
    if vp:
        compact = "".join(text_tokens(vp))
        if compact in _OBLIQUE_SIDE:
            return Evidence(Laterality(_OBLIQUE_SIDE[compact]), f"ViewPosition={vp!r}")
    for item in _sequence(ds, "ViewCodeSequence"):
        key = _code_key(item)
        if key and key in _CODE_SIDE:
            return Evidence(Laterality(_CODE_SIDE[key]), f"ViewCodeSequence={key}")
    for keyword in ("ImageLaterality", "Laterality"):
        value = (tag_text(ds, keyword) or "").upper()
        if value in ("L", "R"):
            return Evidence(Laterality(value), f"{keyword}={value}")
    for keyword in TEXT_TAGS:
        side = _side_from_text(text_tokens(tag_text(ds, keyword)))
        if side is not None:
            return Evidence(Laterality(side), f"{keyword} keywords")
    return None
