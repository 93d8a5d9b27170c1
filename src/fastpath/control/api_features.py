"""Which optional parts the generated control API (fastpath.gen.control_pb2) has.

Flow reports from proxies (`ObservationBatch.flows`) and offload requests in
fleet snapshots (`FleetTelemetry.offload_sessions`) came after the first
version of control.proto; the controller and FleetWatcher use them when the
generated modules carry them and work without them otherwise.
"""
from __future__ import annotations

from fastpath.gen import control_pb2

FLOW_REPORTS_SUPPORTED = "flows_included" in control_pb2.ObservationBatch.DESCRIPTOR.fields_by_name
OFFLOAD_REQUESTS_SUPPORTED = "offload_sessions" in control_pb2.FleetTelemetry.DESCRIPTOR.fields_by_name
