"""Audit trail: PS3.15 A.5 event vocabulary, append-only SHA-256 hash chain."""

from cdss.audit.chain import GENESIS_HASH, canonical, chain_hash
from cdss.audit.participants import Participants, job_participants
from cdss.audit.record import record_event
from cdss.audit.vocabulary import Action, EventID, EventType, Outcome

__all__ = [
    "GENESIS_HASH",
    "Action",
    "EventID",
    "EventType",
    "Outcome",
    "Participants",
    "canonical",
    "chain_hash",
    "job_participants",
    "record_event",
]
