"""Which destinations receive which result objects (the routing of results, decided once per job).

The job's final transaction creates one Delivery per destination chosen here
(:func:`cdss.jobs.results.record_results`); :mod:`cdss.dispatch` only sends what was decided.
"""

from __future__ import annotations

from dataclasses import dataclass

from cdss.config import Destination, SegProfile, Settings

__all__ = ["RETURN_PREFIX", "DeliveryTarget", "delivery_targets", "seg_profiles_wanted"]

#: Prefix of delivery destination names created for ``dispatch.return_to_calling_ae``.
RETURN_PREFIX = "calling-ae:"


@dataclass(frozen=True)
class DeliveryTarget:
    """Where one result object goes: destination name and its AE address."""

    name: str
    ae_title: str
    host: str
    port: int


def _seg_profile(settings: Settings, dest: Destination) -> SegProfile:
    return settings.results.seg_profile if dest.seg_profile is None else dest.seg_profile


def seg_profiles_wanted(settings: Settings) -> list[SegProfile]:
    """The SEG profiles to write for one job: ``results.seg_profile`` first, then any other
    profile a destination with ``send_seg`` asks for (``[[destinations]] seg_profile``)."""
    profiles = [settings.results.seg_profile]
    for dest in settings.destinations:
        profile = _seg_profile(settings, dest)
        if dest.send_seg and profile not in profiles:
            profiles.append(profile)
    return profiles


def delivery_targets(
    settings: Settings,
    kind: str,
    calling_ae_title: str | None,
    seg_profile: SegProfile | str | None = None,
) -> list[DeliveryTarget]:
    """Destinations for one result object of ``kind`` (``SEG``, ``SR``, ``GSPS``, ``SC``).

    Every ``[[destinations]]`` entry whose ``send_<kind>`` flag is set, plus, with
    ``dispatch.return_to_calling_ae``, the ``[[peers]]`` address of the AE that sent the source
    image (SEG, SR and GSPS; SC only when ``results.secondary_capture``), unless that address
    is already a destination. A calling AE without a ``[[peers]]`` entry gets nothing (there is
    no address to send to); the node logs this at start-up.

    A SEG goes only to the destinations whose profile (their ``seg_profile``, else
    ``results.seg_profile``) is ``seg_profile`` (None = ``results.seg_profile``); the calling AE
    gets the ``results.seg_profile`` one. So each destination receives exactly one SEG.
    """
    kind = kind.upper()
    flag = {"SEG": "send_seg", "SR": "send_sr", "GSPS": "send_gsps", "SC": "send_sc"}.get(kind)
    default_profile = settings.results.seg_profile
    profile = default_profile if seg_profile is None else SegProfile(seg_profile)
    targets = [
        DeliveryTarget(d.name, d.ae_title, d.host, d.port)
        for d in settings.destinations
        if flag is not None and getattr(d, flag) and (kind != "SEG" or _seg_profile(settings, d) is profile)
    ]
    if settings.dispatch.return_to_calling_ae and calling_ae_title:
        wanted = (
            (kind == "SEG" and profile is default_profile)
            or kind in ("SR", "GSPS")
            or (kind == "SC" and settings.results.secondary_capture)
        )
        peer = next((p for p in settings.peers if p.ae_title == calling_ae_title.strip()), None)
        if wanted and peer is not None:
            addr = (peer.ae_title, peer.host, peer.port)
            if all((t.ae_title, t.host, t.port) != addr for t in targets):
                targets.append(DeliveryTarget(f"{RETURN_PREFIX}{peer.ae_title}", *addr))
    return targets
