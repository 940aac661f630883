"""DICOM audit messages (PS3.15 A.5) built from audit rows.

Each stored :class:`~cdss.db.models.AuditEvent` becomes one ``<AuditMessage>`` that validates
against the schema of PS3.15 A.5.1 (``schema/audit-message.rnc``; the tests validate every kind
of event the node records). The mapping:

* **EventIdentification**: EventID (DCM code and meaning), EventTypeCode when the row has a
  subtype, EventActionCode, EventDateTime (UTC), EventOutcomeIndicator and, for failures,
  EventOutcomeDescription (the row's description).
* **ActiveParticipant**: the row's ``user`` (a token name, or an AE title written ``AETITLE=X``)
  with its network address, and the node itself (``dicom.ae_title``). Roles for transfers
  (110104/110102): received (action ``C``) → peer is *Source* (110153) and the node
  *Destination* (110152); sent (action ``R``) → the other way round.
* **AuditSourceIdentification**: ``audit.source_id`` (default ``AE@host``), type 4
  (application server process).
* **ParticipantObjectIdentification**: the study (110180 Study Instance UID, with the accession
  number and SOP class / instance UIDs from ``detail``), the patient (Patient Number), the
  audit log itself for 110101 (URI, "Security Audit Log"), the request for 110112 (URI plus
  the base64 query), and the alert subject for 110113.

PS3.15's schema requires a ParticipantObjectName or ParticipantObjectQuery in every participant
object; the node stores no patient *names* in the audit trail, so the patient object is named by
its Patient ID and the study object by its accession number (or its UID when there is none).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import socket
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cdss.audit.chain import iso_utc
from cdss.audit.vocabulary import EventID, EventType

__all__ = ["AuditSource", "audit_message_xml"]

_BAD_XML_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

_EVENT_TYPE_CODES = {t.meaning.lower(): t for t in EventType}
_EVENT_MEANINGS = {e.code: e.meaning for e in EventID}

SOURCE_ROLE = ("110153", "DCM", "Source Role ID")
DESTINATION_ROLE = ("110152", "DCM", "Destination Role ID")
APPLICATION_ROLE = ("110150", "DCM", "Application")
APPLICATION_LAUNCHER_ROLE = ("110151", "DCM", "Application Launcher")


@dataclass(frozen=True)
class AuditSource:
    """Who reports: the node's identity in the messages.

    Attributes
    ----------
    source_id
        AuditSourceID (e.g. ``CDSS@host``).
    node_user_id
        UserID of the node as an active participant (its AE title).
    host
        Host name of the node (NetworkAccessPointID of the node participant).
    enterprise_site_id
        Optional AuditEnterpriseSiteID.
    """

    source_id: str
    node_user_id: str
    host: str
    enterprise_site_id: str | None = None

    @classmethod
    def for_node(
        cls, ae_title: str, source_id: str | None = None, enterprise_site_id: str | None = None
    ) -> AuditSource:
        host = socket.gethostname()
        return cls(source_id or f"{ae_title}@{host}", ae_title, host, enterprise_site_id)


def _clean(value: Any) -> str:
    return _BAD_XML_CHARS.sub("\ufffd", str(value))


def _code(parent: ET.Element, tag: str, code: tuple[str, str, str]) -> ET.Element:
    return ET.SubElement(
        parent, tag, {"csd-code": code[0], "codeSystemName": code[1], "originalText": _clean(code[2])}
    )


def _access_point_type(address: str) -> str:
    try:
        ipaddress.ip_address(address.split("%")[0])
        return "2"  # IP address
    except ValueError:
        return "1"  # machine name


def _participant(
    root: ET.Element,
    user_id: str,
    *,
    requestor: bool,
    alternative: str | None = None,
    address: str | None = None,
    role: tuple[str, str, str] | None = None,
) -> None:
    attrs = {"UserID": _clean(user_id), "UserIsRequestor": "true" if requestor else "false"}
    if alternative:
        attrs["AlternativeUserID"] = _clean(alternative)
    if address:
        attrs["NetworkAccessPointID"] = _clean(address)
        attrs["NetworkAccessPointTypeCode"] = _access_point_type(address)
    el = ET.SubElement(root, "ActiveParticipant", attrs)
    if role is not None:
        _code(el, "RoleIDCode", role)


def _object(
    root: ET.Element,
    object_id: str,
    *,
    id_type: tuple[str, str, str],
    type_code: str,
    role: str,
    name: str | None = None,
    query: bytes | None = None,
    details: Mapping[str, str] | None = None,
) -> ET.Element:
    el = ET.SubElement(
        root,
        "ParticipantObjectIdentification",
        {
            "ParticipantObjectID": _clean(object_id),
            "ParticipantObjectTypeCode": type_code,
            "ParticipantObjectTypeCodeRole": role,
        },
    )
    _code(el, "ParticipantObjectIDTypeCode", id_type)
    if query is not None:
        ET.SubElement(el, "ParticipantObjectQuery").text = base64.b64encode(query).decode("ascii")
    else:
        ET.SubElement(el, "ParticipantObjectName").text = _clean(name or object_id)
    for key, value in (details or {}).items():
        ET.SubElement(
            el,
            "ParticipantObjectDetail",
            {"type": _clean(key), "value": base64.b64encode(value.encode("utf-8")).decode("ascii")},
        )
    return el


def _get(event: Any, name: str) -> Any:
    if isinstance(event, Mapping):
        return event.get(name)
    return getattr(event, name, None)


def audit_message_xml(event: Any, source: AuditSource) -> bytes:
    """Return the PS3.15 A.5 ``AuditMessage`` of one audit row as UTF-8 XML (no declaration).

    Parameters
    ----------
    event
        An :class:`~cdss.db.models.AuditEvent` or a mapping with the same keys.
    source
        The reporting node.
    """
    event_id = str(_get(event, "event_id"))
    action = str(_get(event, "action") or "E")
    outcome = int(_get(event, "outcome") or 0)
    detail: Mapping[str, Any] = _get(event, "detail") or {}
    description = _get(event, "description") or ""
    user = _get(event, "user")
    address = _get(event, "source")

    root = ET.Element("AuditMessage")
    ident = ET.SubElement(
        root,
        "EventIdentification",
        {
            "EventActionCode": action,
            "EventDateTime": iso_utc(_get(event, "occurred_at")),
            "EventOutcomeIndicator": str(outcome),
        },
    )
    _code(
        ident,
        "EventID",
        (event_id, "DCM", _get(event, "event_name") or _EVENT_MEANINGS.get(event_id, event_id)),
    )
    event_type = _get(event, "event_type")
    if event_type:
        known = _EVENT_TYPE_CODES.get(str(event_type).lower())
        if known is not None:
            _code(ident, "EventTypeCode", (known.code, "DCM", known.meaning))
        else:  # a subtype recorded as text only: keep it, as a local code
            _code(ident, "EventTypeCode", (str(event_type), "99CDSS", str(event_type)))
    if outcome != 0 and description:
        ET.SubElement(ident, "EventOutcomeDescription").text = _clean(description)

    # --- active participants: the requestor (user) and the node itself
    transfer = event_id in (EventID.INSTANCES_TRANSFERRED.code, EventID.BEGIN_TRANSFERRING.code)
    sending = transfer and action != "C"
    peer_role = node_role = None
    if transfer:
        peer_role, node_role = (DESTINATION_ROLE, SOURCE_ROLE) if sending else (SOURCE_ROLE, DESTINATION_ROLE)
    elif event_id == EventID.APPLICATION_ACTIVITY.code:
        node_role = APPLICATION_ROLE
        peer_role = APPLICATION_LAUNCHER_ROLE
    user_text = str(user) if user else None
    is_node = user_text in (None, "cdss", source.node_user_id)
    if not is_node:
        assert user_text is not None
        alternative = None
        user_id = user_text
        if user_text.upper().startswith("AETITLE="):
            user_id, alternative = user_text.split("=", 1)[1], user_text
        _participant(
            root, user_id, requestor=not sending, alternative=alternative, address=address, role=peer_role
        )
    _participant(
        root,
        source.node_user_id,
        requestor=is_node or sending,
        alternative=None,
        address=address if is_node and address else source.host,
        role=node_role,
    )

    src_attrs = {"AuditSourceID": _clean(source.source_id)}
    if source.enterprise_site_id:
        src_attrs["AuditEnterpriseSiteID"] = _clean(source.enterprise_site_id)
    src = ET.SubElement(root, "AuditSourceIdentification", src_attrs)
    ET.SubElement(src, "AuditSourceTypeCode", {"csd-code": "4"})  # application server process

    # --- participant objects
    if event_id == EventID.AUDIT_LOG_USED.code:
        _object(
            root,
            str(detail.get("uri") or "cdss:audit_events"),
            id_type=("12", "RFC-3881", "URI"),
            type_code="2",
            role="13",
            name="Security Audit Log",
        )
    elif event_id == EventID.QUERY.code:
        query = detail.get("query")
        _object(
            root,
            str(detail.get("path") or detail.get("uri") or "cdss:query"),
            id_type=("12", "RFC-3881", "URI"),
            type_code="2",
            role="24",  # Query
            query=(query if isinstance(query, str) else _json(query or {})).encode("utf-8"),
            details={"QueryEncoding": "UTF-8"},
        )
    elif event_id == EventID.SECURITY_ALERT.code and not _get(event, "study_instance_uid"):
        _object(
            root,
            str(detail.get("path") or detail.get("uri") or detail.get("subject") or source.source_id),
            id_type=("12", "RFC-3881", "URI"),
            type_code="2",
            role="13",  # Security Resource
            name=str(detail.get("subject") or detail.get("path") or "cdss"),
            details={"Alert Description": str(description)} if description else None,
        )

    study_uid = _get(event, "study_instance_uid")
    accession = _get(event, "accession_number")
    if study_uid:
        study = _object(
            root,
            str(study_uid),
            id_type=("110180", "DCM", "Study Instance UID"),
            type_code="2",
            role="3",  # Report
            name=str(accession or study_uid),
        )
        desc_children = []
        if accession:
            desc_children.append(("Accession", {"Number": _clean(accession)}))
        sop_class = detail.get("sop_class_uid")
        instances = detail.get("sop_instance_uids") or (
            [detail["sop_instance_uid"]] if detail.get("sop_instance_uid") else []
        )
        if desc_children or sop_class or instances:
            description_el = ET.SubElement(study, "ParticipantObjectDescription")
            for tag, attrs in desc_children:
                ET.SubElement(description_el, tag, attrs)
            if sop_class or instances:
                sop_attrs = {"NumberOfInstances": str(len(instances) or int(detail.get("instances") or 0))}
                if sop_class:
                    sop_attrs["UID"] = _clean(sop_class)
                sop_el = ET.SubElement(description_el, "SOPClass", sop_attrs)
                for uid in instances:
                    ET.SubElement(sop_el, "Instance", {"UID": _clean(uid)})
    patient_id = _get(event, "patient_id")
    if patient_id:
        _object(
            root,
            str(patient_id),
            id_type=("2", "RFC-3881", "Patient Number"),
            type_code="1",
            role="1",
            name=str(detail.get("patient_name") or patient_id),
        )
    return ET.tostring(root, encoding="utf-8", xml_declaration=False)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
