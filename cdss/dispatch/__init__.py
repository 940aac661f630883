"""Sending results to PACS and viewers (C-STORE SCU) with leases, back-off and dead letter."""

from cdss.dispatch.dispatcher import Dispatcher, target_for
from cdss.dispatch.scu import SendItem, Target, send_batch
from cdss.dispatch.states import (
    DELIVERED_STATUSES,
    ClaimedDelivery,
    DeliveryStateError,
    SendOutcome,
    claim_batch,
    count_deliveries,
    reconcile_deliveries,
    record_outcomes,
    retry_delivery,
)

__all__ = [
    "DELIVERED_STATUSES",
    "ClaimedDelivery",
    "DeliveryStateError",
    "Dispatcher",
    "SendItem",
    "SendOutcome",
    "Target",
    "claim_batch",
    "count_deliveries",
    "reconcile_deliveries",
    "record_outcomes",
    "retry_delivery",
    "send_batch",
    "target_for",
]
