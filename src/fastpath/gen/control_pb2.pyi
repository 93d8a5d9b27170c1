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
    __slots__ = ("proxy_id", "observations", "flows", "flows_included", "config_version", "decisions_by_axis", "usage")
    class DecisionsByAxisEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class UsageEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: TenantUsage
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[TenantUsage, _Mapping]] = ...) -> None: ...
    PROXY_ID_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    FLOWS_FIELD_NUMBER: _ClassVar[int]
    FLOWS_INCLUDED_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_BY_AXIS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    proxy_id: str
    observations: _containers.RepeatedCompositeFieldContainer[Observation]
    flows: _containers.RepeatedCompositeFieldContainer[Flow]
    flows_included: bool
    config_version: int
    decisions_by_axis: _containers.ScalarMap[str, int]
    usage: _containers.MessageMap[str, TenantUsage]
    def __init__(self, proxy_id: _Optional[str] = ..., observations: _Optional[_Iterable[_Union[Observation, _Mapping]]] = ..., flows: _Optional[_Iterable[_Union[Flow, _Mapping]]] = ..., flows_included: _Optional[bool] = ..., config_version: _Optional[int] = ..., decisions_by_axis: _Optional[_Mapping[str, int]] = ..., usage: _Optional[_Mapping[str, TenantUsage]] = ...) -> None: ...

class TenantUsage(_message.Message):
    __slots__ = ("tokens", "dollars")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    DOLLARS_FIELD_NUMBER: _ClassVar[int]
    tokens: float
    dollars: float
    def __init__(self, tokens: _Optional[float] = ..., dollars: _Optional[float] = ...) -> None: ...

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

class SubscribeRequest(_message.Message):
    __slots__ = ("proxy_id", "resource_types")
    PROXY_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPES_FIELD_NUMBER: _ClassVar[int]
    proxy_id: str
    resource_types: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, proxy_id: _Optional[str] = ..., resource_types: _Optional[_Iterable[str]] = ...) -> None: ...

class BackendSpec(_message.Message):
    __slots__ = ("name", "address", "region", "cost_per_1k_tokens", "power_budget_watts", "models", "metrics_url")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    COST_PER_1K_TOKENS_FIELD_NUMBER: _ClassVar[int]
    POWER_BUDGET_WATTS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    METRICS_URL_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    region: str
    cost_per_1k_tokens: float
    power_budget_watts: float
    models: _containers.RepeatedScalarFieldContainer[str]
    metrics_url: str
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., region: _Optional[str] = ..., cost_per_1k_tokens: _Optional[float] = ..., power_budget_watts: _Optional[float] = ..., models: _Optional[_Iterable[str]] = ..., metrics_url: _Optional[str] = ...) -> None: ...

class RouterSettings(_message.Message):
    __slots__ = ("default_policy", "affinity_max_utilisation")
    DEFAULT_POLICY_FIELD_NUMBER: _ClassVar[int]
    AFFINITY_MAX_UTILISATION_FIELD_NUMBER: _ClassVar[int]
    default_policy: str
    affinity_max_utilisation: float
    def __init__(self, default_policy: _Optional[str] = ..., affinity_max_utilisation: _Optional[float] = ...) -> None: ...

class LimitSettings(_message.Message):
    __slots__ = ("values",)
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.ScalarMap[str, float]
    def __init__(self, values: _Optional[_Mapping[str, float]] = ...) -> None: ...

class RegionRtt(_message.Message):
    __slots__ = ("rtt_ms",)
    class RttMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    rtt_ms: _containers.ScalarMap[str, float]
    def __init__(self, rtt_ms: _Optional[_Mapping[str, float]] = ...) -> None: ...

class BudgetState(_message.Message):
    __slots__ = ("tenant", "tokens_limit", "tokens_remaining", "dollars_limit", "dollars_remaining", "window_s", "window_ends_unix_ms")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_REMAINING_FIELD_NUMBER: _ClassVar[int]
    DOLLARS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    DOLLARS_REMAINING_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    WINDOW_ENDS_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    tokens_limit: float
    tokens_remaining: float
    dollars_limit: float
    dollars_remaining: float
    window_s: float
    window_ends_unix_ms: int
    def __init__(self, tenant: _Optional[str] = ..., tokens_limit: _Optional[float] = ..., tokens_remaining: _Optional[float] = ..., dollars_limit: _Optional[float] = ..., dollars_remaining: _Optional[float] = ..., window_s: _Optional[float] = ..., window_ends_unix_ms: _Optional[int] = ...) -> None: ...

class Resource(_message.Message):
    __slots__ = ("type", "name", "backend", "telemetry", "policy", "session_backend", "settings", "region", "limits", "prefix", "budget", "payload")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SESSION_BACKEND_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    type: str
    name: str
    backend: BackendSpec
    telemetry: BackendTelemetry
    policy: Policy
    session_backend: str
    settings: RouterSettings
    region: RegionRtt
    limits: LimitSettings
    prefix: PrefixBlocks
    budget: BudgetState
    payload: bytes
    def __init__(self, type: _Optional[str] = ..., name: _Optional[str] = ..., backend: _Optional[_Union[BackendSpec, _Mapping]] = ..., telemetry: _Optional[_Union[BackendTelemetry, _Mapping]] = ..., policy: _Optional[_Union[Policy, _Mapping]] = ..., session_backend: _Optional[str] = ..., settings: _Optional[_Union[RouterSettings, _Mapping]] = ..., region: _Optional[_Union[RegionRtt, _Mapping]] = ..., limits: _Optional[_Union[LimitSettings, _Mapping]] = ..., prefix: _Optional[_Union[PrefixBlocks, _Mapping]] = ..., budget: _Optional[_Union[BudgetState, _Mapping]] = ..., payload: _Optional[bytes] = ...) -> None: ...

class ResourceRef(_message.Message):
    __slots__ = ("type", "name")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    type: str
    name: str
    def __init__(self, type: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ConfigUpdate(_message.Message):
    __slots__ = ("version", "nonce", "full_state", "generated_unix_ms", "resources", "removed", "offload_sessions", "config_generation")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    FULL_STATE_FIELD_NUMBER: _ClassVar[int]
    GENERATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    OFFLOAD_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_GENERATION_FIELD_NUMBER: _ClassVar[int]
    version: int
    nonce: str
    full_state: bool
    generated_unix_ms: int
    resources: _containers.RepeatedCompositeFieldContainer[Resource]
    removed: _containers.RepeatedCompositeFieldContainer[ResourceRef]
    offload_sessions: _containers.RepeatedScalarFieldContainer[str]
    config_generation: int
    def __init__(self, version: _Optional[int] = ..., nonce: _Optional[str] = ..., full_state: _Optional[bool] = ..., generated_unix_ms: _Optional[int] = ..., resources: _Optional[_Iterable[_Union[Resource, _Mapping]]] = ..., removed: _Optional[_Iterable[_Union[ResourceRef, _Mapping]]] = ..., offload_sessions: _Optional[_Iterable[str]] = ..., config_generation: _Optional[int] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class ReloadReply(_message.Message):
    __slots__ = ("applied", "message", "config_generation", "version")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_GENERATION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    message: str
    config_generation: int
    version: int
    def __init__(self, applied: _Optional[bool] = ..., message: _Optional[str] = ..., config_generation: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BackendStatus(_message.Message):
    __slots__ = ("telemetry", "region", "cost_per_1k_tokens", "models", "scrape_seconds", "scrape_errors")
    TELEMETRY_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    COST_PER_1K_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    SCRAPE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SCRAPE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    telemetry: BackendTelemetry
    region: str
    cost_per_1k_tokens: float
    models: _containers.RepeatedScalarFieldContainer[str]
    scrape_seconds: float
    scrape_errors: int
    def __init__(self, telemetry: _Optional[_Union[BackendTelemetry, _Mapping]] = ..., region: _Optional[str] = ..., cost_per_1k_tokens: _Optional[float] = ..., models: _Optional[_Iterable[str]] = ..., scrape_seconds: _Optional[float] = ..., scrape_errors: _Optional[int] = ...) -> None: ...

class ProxyStatus(_message.Message):
    __slots__ = ("proxy_id", "config_version", "last_report_age_s", "subscribed")
    PROXY_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_REPORT_AGE_S_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    proxy_id: str
    config_version: int
    last_report_age_s: float
    subscribed: bool
    def __init__(self, proxy_id: _Optional[str] = ..., config_version: _Optional[int] = ..., last_report_age_s: _Optional[float] = ..., subscribed: _Optional[bool] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("version", "config_generation", "config_source", "generated_unix_ms", "backends", "decisions_by_axis", "flows_by_path", "bytes_by_path", "proxies", "sessions_learned", "default_policy")
    class DecisionsByAxisEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class FlowsByPathEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class BytesByPathEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_GENERATION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_SOURCE_FIELD_NUMBER: _ClassVar[int]
    GENERATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_BY_AXIS_FIELD_NUMBER: _ClassVar[int]
    FLOWS_BY_PATH_FIELD_NUMBER: _ClassVar[int]
    BYTES_BY_PATH_FIELD_NUMBER: _ClassVar[int]
    PROXIES_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_LEARNED_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_POLICY_FIELD_NUMBER: _ClassVar[int]
    version: int
    config_generation: int
    config_source: str
    generated_unix_ms: int
    backends: _containers.RepeatedCompositeFieldContainer[BackendStatus]
    decisions_by_axis: _containers.ScalarMap[str, int]
    flows_by_path: _containers.ScalarMap[str, int]
    bytes_by_path: _containers.ScalarMap[str, int]
    proxies: _containers.RepeatedCompositeFieldContainer[ProxyStatus]
    sessions_learned: int
    default_policy: str
    def __init__(self, version: _Optional[int] = ..., config_generation: _Optional[int] = ..., config_source: _Optional[str] = ..., generated_unix_ms: _Optional[int] = ..., backends: _Optional[_Iterable[_Union[BackendStatus, _Mapping]]] = ..., decisions_by_axis: _Optional[_Mapping[str, int]] = ..., flows_by_path: _Optional[_Mapping[str, int]] = ..., bytes_by_path: _Optional[_Mapping[str, int]] = ..., proxies: _Optional[_Iterable[_Union[ProxyStatus, _Mapping]]] = ..., sessions_learned: _Optional[int] = ..., default_policy: _Optional[str] = ...) -> None: ...
