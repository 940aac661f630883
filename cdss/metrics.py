"""Prometheus metrics of the node (exposed at ``/metrics`` by :mod:`cdss.api`).

One registry per process; the names are part of the public interface (dashboards, alerts).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "ANALYSIS_SECONDS",
    "ASSOCIATIONS_REJECTED",
    "BATCH_SIZE",
    "BROKER_PUBLISH_FAILURES",
    "BROKER_UP",
    "DELIVERIES",
    "DELIVERY_SECONDS",
    "END_TO_END_SECONDS",
    "INSTANCES_RECEIVED",
    "JOBS_FINISHED",
    "QUEUE_DEPTH",
    "REGISTRY",
    "STORE_FAILURES",
    "STORE_SECONDS",
]

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

INSTANCES_RECEIVED = Counter(
    "cdss_instances_received_total",
    "C-STORE requests answered, by DIMSE status category (success, duplicate, refused, error).",
    ["outcome"],
    registry=REGISTRY,
)
ASSOCIATIONS_REJECTED = Counter(
    "cdss_associations_rejected_total",
    "Associations rejected (calling AE / address not allowed, TLS failure, limit).",
    ["reason"],
    registry=REGISTRY,
)
JOBS_FINISHED = Counter(
    "cdss_jobs_finished_total",
    "Analysis job attempts that ended, by analysis and outcome (succeeded, not_applicable, retry, dead).",
    ["analysis", "outcome"],
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "cdss_deliveries_total",
    "Result deliveries that ended an attempt, by outcome (delivered, retry, dead).",
    ["outcome"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "cdss_queue_depth",
    "Items waiting, by queue (jobs, deliveries); refreshed by the node every few seconds.",
    ["queue"],
    registry=REGISTRY,
)
STORE_FAILURES = Counter(
    "cdss_store_failures_total",
    "C-STORE requests answered with a non-success status, by status (hex) and reason "
    "(see docs/dicom-conformance.md).",
    ["status", "reason"],
    registry=REGISTRY,
)
STORE_SECONDS = Histogram(
    "cdss_store_seconds",
    "C-STORE handler time: parse, fsync, database commit (seconds).",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
ANALYSIS_SECONDS = Histogram(
    "cdss_analysis_seconds",
    "Analysis + encoding time per job (seconds).",
    ["analysis"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
DELIVERY_SECONDS = Histogram(
    "cdss_delivery_seconds",
    "C-STORE SCU time per delivered object (seconds).",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
END_TO_END_SECONDS = Histogram(
    "cdss_end_to_end_seconds",
    "From receipt of an image to the last of its results delivered (seconds).",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "cdss_analysis_batch_size",
    "Images analysed together in one batched model call (jobs.batch_size), by analysis.",
    ["analysis"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
    registry=REGISTRY,
)
BROKER_UP = Gauge(
    "cdss_broker_up",
    "Celery backend: 1 when the node reached the broker at its last publish or probe, 0 when not.",
    registry=REGISTRY,
)
BROKER_PUBLISH_FAILURES = Counter(
    "cdss_broker_publish_failures_total",
    "Celery backend: job ids that could not be published (the sweeper publishes them again later).",
    registry=REGISTRY,
)
