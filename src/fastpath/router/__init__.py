"""The router: picks backends for a request from a fleet snapshot (pure, vectorised, explainable)."""
from fastpath.router.features import (
    MetadataError,
    RequestFeatures,
    features_from_headers,
    model_from_infer_request,
    model_from_path,
)
from fastpath.router.live import LiveStats
from fastpath.router.router import Decision, Router
from fastpath.router.snapshot import FleetSnapshot, build_snapshot

__all__ = [
    "Decision",
    "FleetSnapshot",
    "LiveStats",
    "MetadataError",
    "RequestFeatures",
    "Router",
    "build_snapshot",
    "features_from_headers",
    "model_from_infer_request",
    "model_from_path",
]
