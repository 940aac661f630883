"""Receiving images: the DICOM listener (association policy, C-ECHO, C-STORE SCP)."""

from cdss.receive.ingest import Ingestor, ReceivedDataset, StoreOutcome
from cdss.receive.server import AssociationPolicy, Receiver, server_tls_context
from cdss.receive.status import StoreStatus
from cdss.receive.syntaxes import STORAGE_SOP_CLASSES, SyntaxSupport, syntax_support
from cdss.receive.validate import Rejection, validate

__all__ = [
    "STORAGE_SOP_CLASSES",
    "AssociationPolicy",
    "Ingestor",
    "ReceivedDataset",
    "Receiver",
    "Rejection",
    "StoreOutcome",
    "StoreStatus",
    "SyntaxSupport",
    "server_tls_context",
    "syntax_support",
    "validate",
]
