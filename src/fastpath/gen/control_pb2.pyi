from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListBackendsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchFleetRequest(_message.Message):
    __slots__ = ("proxy_id",)
    PROXY_ID_FIELD_NUMBER: _ClassVar[int]
    proxy_id: str
    def __init__(self, proxy_id: _Optional[str] = ...) -> None: ...

class BackendTelemetry(_message.Message):
    __slots__ = ("name", "healthy", "health_detail", "num_requests_waiting", "num_requests_running", "gpu_cache_usage_perc", "power_draw_watts", "power_budget_watts", "ttft_ms_observed", "error_rate", "max_num_seqs", "scraped_unix_ms", "has_metrics", "ttft_ms_by_region")
    class TtftMsByRegionEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    HEALTH_DETAIL_FIELD_NUMBER: _ClassVar[int]
    NUM_REQUESTS_WAITING_FIELD_NUMBER: _ClassVar[int]
    NUM_REQUESTS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    GPU_CACHE_USAGE_PERC_FIELD_NUMBER: _ClassVar[int]
    POWER_DRAW_WATTS_FIELD_NUMBER: _ClassVar[int]
    POWER_BUDGET_WATTS_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_OBSERVED_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_NUM_SEQS_FIELD_NUMBER: _ClassVar[int]
    SCRAPED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    HAS_METRICS_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_BY_REGION_FIELD_NUMBER: _ClassVar[int]
    name: str
    healthy: bool
    health_detail: str
    num_requests_waiting: float
    num_requests_running: float
    gpu_cache_usage_perc: float
    power_draw_watts: float
    power_budget_watts: float
    ttft_ms_observed: float
    error_rate: float
    max_num_seqs: float
    scraped_unix_ms: int
    has_metrics: bool
    ttft_ms_by_region: _containers.ScalarMap[str, float]
    def __init__(self, name: _Optional[str] = ..., healthy: _Optional[bool] = ..., health_detail: _Optional[str] = ..., num_requests_waiting: _Optional[float] = ..., num_requests_running: _Optional[float] = ..., gpu_cache_usage_perc: _Optional[float] = ..., power_draw_watts: _Optional[float] = ..., power_budget_watts: _Optional[float] = ..., ttft_ms_observed: _Optional[float] = ..., error_rate: _Optional[float] = ..., max_num_seqs: _Optional[float] = ..., scraped_unix_ms: _Optional[int] = ..., has_metrics: _Optional[bool] = ..., ttft_ms_by_region: _Optional[_Mapping[str, float]] = ...) -> None: ...

class FleetTelemetry(_message.Message):
    __slots__ = ("version", "generated_unix_ms", "backends", "session_backend", "offload_sessions", "prefix_index")
    class SessionBackendEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    GENERATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    SESSION_BACKEND_FIELD_NUMBER: _ClassVar[int]
    OFFLOAD_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_INDEX_FIELD_NUMBER: _ClassVar[int]
    version: int
    generated_unix_ms: int
    backends: _containers.RepeatedCompositeFieldContainer[BackendTelemetry]
    session_backend: _containers.ScalarMap[str, str]
    offload_sessions: _containers.RepeatedScalarFieldContainer[str]
    prefix_index: _containers.RepeatedCompositeFieldContainer[PrefixBlocks]
    def __init__(self, version: _Optional[int] = ..., generated_unix_ms: _Optional[int] = ..., backends: _Optional[_Iterable[_Union[BackendTelemetry, _Mapping]]] = ..., session_backend: _Optional[_Mapping[str, str]] = ..., offload_sessions: _Optional[_Iterable[str]] = ..., prefix_index: _Optional[_Iterable[_Union[PrefixBlocks, _Mapping]]] = ...) -> None: ...

class PrefixBlocks(_message.Message):
    __slots__ = ("backend", "blocks")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    backend: str
    blocks: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, backend: _Optional[str] = ..., blocks: _Optional[_Iterable[int]] = ...) -> None: ...

class Observation(_message.Message):
    __slots__ = ("backend", "region", "session", "ttft_ms", "ok", "model", "prefix_blocks")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PREFIX_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    backend: str
    region: str
    session: str
    ttft_ms: float
    ok: bool
    model: str
    prefix_blocks: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, backend: _Optional[str] = ..., region: _Optional[str] = ..., session: _Optional[str] = ..., ttft_ms: _Optional[float] = ..., ok: _Optional[bool] = ..., model: _Optional[str] = ..., prefix_blocks: _Optional[_Iterable[int]] = ...) -> None: ...

class ObservationBatch(_message.Message):
    __slots__ = ("proxy_id", "observations", "flows", "flows_included")
    PROXY_ID_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    FLOWS_FIELD_NUMBER: _ClassVar[int]
    FLOWS_INCLUDED_FIELD_NUMBER: _ClassVar[int]
    proxy_id: str
    observations: _containers.RepeatedCompositeFieldContainer[Observation]
    flows: _containers.RepeatedCompositeFieldContainer[Flow]
    flows_included: bool
    def __init__(self, proxy_id: _Optional[str] = ..., observations: _Optional[_Iterable[_Union[Observation, _Mapping]]] = ..., flows: _Optional[_Iterable[_Union[Flow, _Mapping]]] = ..., flows_included: _Optional[bool] = ...) -> None: ...

class ReportAck(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    def __init__(self, accepted: _Optional[int] = ...) -> None: ...

class Policy(_message.Message):
    __slots__ = ("name", "ttft", "cost", "affinity", "capacity", "proximity")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TTFT_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    AFFINITY_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    PROXIMITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    ttft: float
    cost: float
    affinity: float
    capacity: float
    proximity: float
    def __init__(self, name: _Optional[str] = ..., ttft: _Optional[float] = ..., cost: _Optional[float] = ..., affinity: _Optional[float] = ..., capacity: _Optional[float] = ..., proximity: _Optional[float] = ...) -> None: ...

class ListPoliciesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PolicyList(_message.Message):
    __slots__ = ("default_policy", "policies")
    DEFAULT_POLICY_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    default_policy: str
    policies: _containers.RepeatedCompositeFieldContainer[Policy]
    def __init__(self, default_policy: _Optional[str] = ..., policies: _Optional[_Iterable[_Union[Policy, _Mapping]]] = ...) -> None: ...

class Flow(_message.Message):
    __slots__ = ("session", "client", "backend", "path", "bytes_python", "bytes_offload", "age_s", "proxy_id")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    BYTES_PYTHON_FIELD_NUMBER: _ClassVar[int]
    BYTES_OFFLOAD_FIELD_NUMBER: _ClassVar[int]
    AGE_S_FIELD_NUMBER: _ClassVar[int]
    PROXY_ID_FIELD_NUMBER: _ClassVar[int]
    session: str
    client: str
    backend: str
    path: str
    bytes_python: int
    bytes_offload: int
    age_s: float
    proxy_id: str
    def __init__(self, session: _Optional[str] = ..., client: _Optional[str] = ..., backend: _Optional[str] = ..., path: _Optional[str] = ..., bytes_python: _Optional[int] = ..., bytes_offload: _Optional[int] = ..., age_s: _Optional[float] = ..., proxy_id: _Optional[str] = ...) -> None: ...

class ListFlowsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FlowList(_message.Message):
    __slots__ = ("flows",)
    FLOWS_FIELD_NUMBER: _ClassVar[int]
    flows: _containers.RepeatedCompositeFieldContainer[Flow]
    def __init__(self, flows: _Optional[_Iterable[_Union[Flow, _Mapping]]] = ...) -> None: ...

class SetFlowPathRequest(_message.Message):
    __slots__ = ("session", "path")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    session: str
    path: str
    def __init__(self, session: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...
