"""fastpath configuration: one TOML file, with an embedded default.

Every process (proxy, controller, simulated fleet, demo) reads the same
`Config`, so a fleet described once is routed, scraped and simulated alike.
Errors name the offending key and say what to write instead.
"""
from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

AXES = ("ttft", "cost", "affinity", "capacity", "proximity")


class ConfigError(ValueError):
    """A config file that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class SimSpec:
    """How a simulated site behaves (ignored for real backends)."""

    slots: int = 8
    tokens_per_s: float = 100.0
    prefill_ms: float = 25.0
    power_idle_watts: float = 1000.0
    power_per_slot_watts: float = 400.0
    kv_cache_blocks: int = 4096  # prefix KV cache: blocks of KV_BLOCK_CHARS prompt characters (LRU)


@dataclass(frozen=True)
class Backend:
    name: str
    address: str  # host:port of an HTTP/2 (h2c) gRPC server
    region: str
    cost_per_1k_tokens: float
    power_budget_watts: float
    models: tuple[str, ...]
    metrics_url: str = ""  # Prometheus text endpoint; "" = score from proxy observations
    sim: SimSpec | None = None

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])


@dataclass(frozen=True)
class Policy:
    name: str
    weights: dict[str, float]  # axis -> weight (normalised to sum 1)
    allow_substitute: bool = False  # its requests may be served by a model group's substitute


@dataclass(frozen=True)
class ProxyConfig:
    listen: str = "127.0.0.1:50051"
    metrics_listen: str = "127.0.0.1:9101"
    upstream_connections: int = 1
    connect_timeout_ms: float = 1000.0
    pin_sessions: bool = True  # connections whose first call names a session are pinned (relayed verbatim)
    tls_cert: str = ""  # PEM certificate chain: terminate TLS (ALPN h2) on the listener
    tls_key: str = ""


@dataclass(frozen=True)
class ControlConfig:
    listen: str = "127.0.0.1:50052"
    scrape_interval_ms: float = 50.0
    health_interval_ms: float = 250.0
    health_timeout_ms: float = 200.0
    health_fall: int = 3  # failed probes in a row before a backend is ejected
    health_rise: int = 2  # good probes (or answered calls) in a row before it is back
    token_file: str = "~/.config/fastpath/control.token"  # bearer token for calls that change routing
    metrics_listen: str = "127.0.0.1:9102"  # the controller's own /metrics; "" = off


@dataclass(frozen=True)
class PrefixConfig:
    """Prompt-prefix affinity ([router.prefix]): blocks of the prompt routed to where they were sent."""

    enabled: bool = True
    input_name: str = "text_input"  # the BYTES input that carries the prompt
    block_bytes: int = 256
    max_prompt_bytes: int = 16384
    min_match_blocks: int = 4  # shorter matches score 0 (a shared system prompt alone does not pin)
    capacity_blocks: int = 16384  # remembered per backend (LRU)
    ttl_s: float = 300.0
    load_bound: float = 0.85  # utilisation above which a match counts for less, down to 0 at 1
    ship_blocks: int = 256  # per backend, newest first, in controller snapshots (0 = not shipped)


@dataclass(frozen=True)
class HedgeConfig:
    """TTFT hedging ([router.hedge]): a call whose first response byte is late is reset and replayed
    once on its next candidate (fastpath.dataplane.hedging)."""

    enabled: bool = False
    after: str = "auto"  # "slo": the request's TTFT SLO; "predicted": factor x predicted TTFT; "auto": the earlier
    factor: float = 3.0  # k in "predicted TTFT x k"
    min_ms: float = 50.0  # never hedge earlier than this after the attempt started
    budget_percent: float = 10.0  # hedges at most this share of the calls hedging applies to ...
    budget_burst: float = 5.0  # ... plus this many in a burst (a token bucket, as gRPC retry throttling)


HEDGE_AFTER = ("slo", "predicted", "auto")


@dataclass(frozen=True)
class AdmissionConfig:
    """[admission]: hold calls no backend has headroom for (fastpath.dataplane.admission_gate)."""

    max_queue_bytes: int = 8 << 20  # request bytes held across every queue of one proxy process
    max_wait_ms: float = 5000.0  # how long a call without SLO or grpc-timeout may wait
    default_priority: int = 0  # calls without x-fastpath-priority


@dataclass(frozen=True)
class ModelGroup:
    """[model_groups."MODEL"]: models that may serve MODEL's requests when the request allows it."""

    model: str
    substitutes: tuple[str, ...]  # in order of preference
    penalty: float = 0.1  # score subtracted per step down the list (first substitute: 1 x penalty)


@dataclass(frozen=True)
class Config:
    proxy: ProxyConfig
    control: ControlConfig
    offload_driver: str
    default_policy: str
    affinity_max_utilisation: float
    policies: dict[str, Policy]
    rtt_ms: dict[str, dict[str, float]]  # client region -> site region -> RTT ms
    backends: tuple[Backend, ...]
    source: str = "<embedded default>"
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    limits: dict[str, float] = field(default_factory=dict)  # [limits]: overrides of the proxy's Limits defaults
    prefix: PrefixConfig = PrefixConfig()
    panic_threshold: float = 0.5  # router: below this healthy share, route to all (Envoy's panic)
    explore_every: int = 20  # router: 1 call in this many may go to a not yet observed backend (0 = never)
    model_groups: dict[str, ModelGroup] = field(default_factory=dict)
    budgets: dict[str, Any] = field(default_factory=dict)  # tenant -> fastpath.control.budgets.Budget
    hedge: HedgeConfig = HedgeConfig()
    admission: AdmissionConfig | None = None  # None: calls are never held (no [admission] table)

    def backend(self, name: str) -> Backend:
        for b in self.backends:
            if b.name == name:
                return b
        raise KeyError(name)

    def to_toml(self) -> str:
        """The config as TOML, so child processes can be handed exactly this config."""
        import tomli_w

        return tomli_w.dumps(self.raw)

    def write(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(self.to_toml())
        return p

    @property
    def client_regions(self) -> list[str]:
        return sorted(self.rtt_ms)

    @property
    def site_regions(self) -> list[str]:
        return sorted({b.region for b in self.backends})

    @property
    def models(self) -> list[str]:
        return sorted({m for b in self.backends for m in b.models})


TOP_LEVEL_KEYS = ("proxy", "control", "offload", "router", "policies", "regions", "backends", "limits", "model_groups",
                  "budgets", "admission")
OFFLOAD_KEYS = ("driver",)
ROUTER_KEYS = ("default_policy", "affinity_max_utilisation", "prefix", "panic_threshold", "explore_every", "hedge")
REGIONS_KEYS = ("rtt_ms",)
BACKEND_KEYS = tuple(f.name for f in fields(Backend))


def _keys_of(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def check_keys(table: Any, known: tuple[str, ...] | list[str], where: str, what: str = "key",
               whats: str = "keys") -> None:
    """Refuses a key this table does not have, naming it and the nearest known key (a typo is not ignored)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where or 'config'}: expected a table, got {table!r}")
    for key in table:
        if key in known:
            continue
        near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"did you mean {near[0]!r}? " if near else ""
        place = f"[{where}]" if where else "the top level"
        raise ConfigError(f"{where + '.' if where else ''}{key}: unknown {what} in {place}; {hint}"
                          f"{whats} are {', '.join(known)}")


def split_hostport(value: str, key: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{key} = {value!r}: expected host:port, e.g. \"127.0.0.1:50051\" (port 0 = any free port)")
    return host, int(port)


def _num(table: dict[str, Any], key: str, where: str, default: float | None = None) -> float:
    if key not in table:
        if default is None:
            raise ConfigError(f"{where}: missing required key {key!r}")
        return float(default)
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}.{key} = {value!r}: expected a number")
    if value < 0:
        raise ConfigError(f"{where}.{key} = {value!r}: must not be negative")
    return float(value)


def _str(table: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    if key not in table:
        if default is None:
            raise ConfigError(f"{where}: missing required key {key!r}")
        return default
    value = table[key]
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key} = {value!r}: expected a string")
    return value


def _bool(table: dict[str, Any], key: str, where: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key} = {value!r}: expected true or false")
    return value


def _backend(i: int, t: dict[str, Any]) -> Backend:
    where = f"backends[{i}]"
    if not isinstance(t, dict):
        raise ConfigError(f"{where}: expected a table ([[backends]])")
    name = _str(t, "name", where)
    where = f"backends[{i}] ({name})"
    check_keys(t, BACKEND_KEYS, where)
    address = _str(t, "address", where)
    split_hostport(address, f"{where}.address")
    models = t.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) and m for m in models):
        raise ConfigError(f"{where}.models: expected a non-empty list of model names")
    sim = None
    if "sim" in t:
        s = t["sim"]
        sw = f"{where}.sim"
        check_keys(s, _keys_of(SimSpec), sw)
        sim = SimSpec(
            slots=int(_num(s, "slots", sw, SimSpec.slots)),
            tokens_per_s=_num(s, "tokens_per_s", sw, SimSpec.tokens_per_s),
            prefill_ms=_num(s, "prefill_ms", sw, SimSpec.prefill_ms),
            power_idle_watts=_num(s, "power_idle_watts", sw, SimSpec.power_idle_watts),
            power_per_slot_watts=_num(s, "power_per_slot_watts", sw, SimSpec.power_per_slot_watts),
            kv_cache_blocks=int(_num(s, "kv_cache_blocks", sw, SimSpec.kv_cache_blocks)),
        )
        if sim.slots < 1:
            raise ConfigError(f"{sw}.slots must be at least 1")
    return Backend(
        name=name,
        address=address,
        region=_str(t, "region", where),
        cost_per_1k_tokens=_num(t, "cost_per_1k_tokens", where),
        power_budget_watts=_num(t, "power_budget_watts", where, 0.0),
        models=tuple(models),
        metrics_url=_str(t, "metrics_url", where, ""),
        sim=sim,
    )


def _limits(table: Any) -> dict[str, float]:
    """[limits]: per-connection and per-process limits of the proxy (names as in fastpath.dataplane.limits.Limits)."""
    import dataclasses

    from fastpath.dataplane.limits import Limits

    if not isinstance(table, dict):
        raise ConfigError("limits: expected a table ([limits])")
    known = {f.name: f.type for f in dataclasses.fields(Limits)}
    check_keys(table, sorted(known), "limits", "limit", "limits")
    out: dict[str, float] = {}
    for key in table:
        value = _num(table, key, "limits")
        if not 0 < value < float("inf"):
            raise ConfigError(f"limits.{key} = {table[key]!r}: must be a positive finite number")
        if known[key] in (int, "int"):
            if value != int(value):
                raise ConfigError(f"limits.{key} = {table[key]!r}: expected a whole number")
            value = int(value)
        out[key] = value
    return out


def parse_config(data: dict[str, Any], source: str = "<dict>") -> Config:
    """Validates a parsed TOML document and builds a Config."""
    check_keys(data, TOP_LEVEL_KEYS, "")
    for table, known in (("proxy", _keys_of(ProxyConfig)), ("control", _keys_of(ControlConfig)),
                         ("offload", OFFLOAD_KEYS), ("router", ROUTER_KEYS), ("regions", REGIONS_KEYS)):
        check_keys(data.get(table, {}), known, table)
    px = data.get("proxy", {})
    proxy = ProxyConfig(
        listen=_str(px, "listen", "proxy", ProxyConfig.listen),
        metrics_listen=_str(px, "metrics_listen", "proxy", ProxyConfig.metrics_listen),
        upstream_connections=int(_num(px, "upstream_connections", "proxy", 1)),
        connect_timeout_ms=_num(px, "connect_timeout_ms", "proxy", 1000),
        pin_sessions=_bool(px, "pin_sessions", "proxy", True),
        tls_cert=_str(px, "tls_cert", "proxy", ""),
        tls_key=_str(px, "tls_key", "proxy", ""),
    )
    if bool(proxy.tls_cert) != bool(proxy.tls_key):
        raise ConfigError("proxy.tls_cert and proxy.tls_key go together: set both (PEM files) or neither")
    split_hostport(proxy.listen, "proxy.listen")
    ct = data.get("control", {})
    control = ControlConfig(
        listen=_str(ct, "listen", "control", ControlConfig.listen),
        scrape_interval_ms=_num(ct, "scrape_interval_ms", "control", 50),
        health_interval_ms=_num(ct, "health_interval_ms", "control", 250),
        health_timeout_ms=_num(ct, "health_timeout_ms", "control", 200),
        health_fall=int(_num(ct, "health_fall", "control", ControlConfig.health_fall)),
        health_rise=int(_num(ct, "health_rise", "control", ControlConfig.health_rise)),
        token_file=_str(ct, "token_file", "control", ControlConfig.token_file),
        metrics_listen=_str(ct, "metrics_listen", "control", ControlConfig.metrics_listen),
    )
    if control.metrics_listen:
        split_hostport(control.metrics_listen, "control.metrics_listen")
    split_hostport(control.listen, "control.listen")
    driver = _str(data.get("offload", {}), "driver", "offload", "none")
    if driver not in ("none", "ebpf", "dpu"):
        raise ConfigError(f"offload.driver = {driver!r}: expected \"none\", \"ebpf\" or \"dpu\"")

    policies: dict[str, Policy] = {}
    for pname, table in data.get("policies", {}).items():
        check_keys(table, (*AXES, "allow_substitute"), f"policies.{pname}", "axis", "axes")
        w = {a: _num(table, a, f"policies.{pname}", 0.0) for a in AXES}
        total = sum(w.values())
        if total <= 0:
            raise ConfigError(f"policies.{pname}: at least one weight must be positive")
        policies[pname] = Policy(pname, {a: v / total for a, v in w.items()},
                                 _bool(table, "allow_substitute", f"policies.{pname}", False))
    if not policies:
        policies["balanced"] = Policy("balanced", {a: 1 / len(AXES) for a in AXES})
    rt = data.get("router", {})
    default_policy = _str(rt, "default_policy", "router", next(iter(policies)))
    if default_policy not in policies:
        raise ConfigError(f"router.default_policy = {default_policy!r}: no such policy; have {sorted(policies)}")

    rtt: dict[str, dict[str, float]] = {}
    for client, row in data.get("regions", {}).get("rtt_ms", {}).items():
        rtt[client] = {site: _num(row, site, f"regions.rtt_ms.{client}") for site in row}

    raw_backends = data.get("backends", [])
    if not isinstance(raw_backends, list) or not raw_backends:
        raise ConfigError("no [[backends]] configured: list at least one backend (name, address, region, models)")
    backends = tuple(_backend(i, t) for i, t in enumerate(raw_backends))
    names = [b.name for b in backends]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"backend names must be unique; repeated: {dupes}")
    return Config(
        limits=_limits(data.get("limits", {})),
        proxy=proxy,
        control=control,
        offload_driver=driver,
        default_policy=default_policy,
        affinity_max_utilisation=_num(rt, "affinity_max_utilisation", "router", 0.85),
        policies=policies,
        rtt_ms=rtt,
        backends=backends,
        source=source,
        raw=data,
        prefix=_prefix(rt.get("prefix", {})),
        panic_threshold=_num(rt, "panic_threshold", "router", 0.5),
        explore_every=int(_num(rt, "explore_every", "router", 20)),
        model_groups=_model_groups(data.get("model_groups", {})),
        budgets=_budgets(data.get("budgets", {})),
        hedge=_hedge(rt.get("hedge", {})),
        admission=_admission(data["admission"]) if "admission" in data else None,
    )


def _admission(t: dict[str, Any]) -> AdmissionConfig:
    w = "admission"
    check_keys(t, _keys_of(AdmissionConfig), w)
    d = AdmissionConfig()
    a = AdmissionConfig(max_queue_bytes=int(_num(t, "max_queue_bytes", w, d.max_queue_bytes)),
                        max_wait_ms=_num(t, "max_wait_ms", w, d.max_wait_ms),
                        default_priority=int(_num(t, "default_priority", w, d.default_priority)))
    if a.max_queue_bytes <= 0 or a.max_wait_ms <= 0:
        raise ConfigError("admission: max_queue_bytes and max_wait_ms must be positive")
    return a


def _budgets(t: dict[str, Any]) -> dict[str, Any]:
    """[budgets."TENANT"] tokens = N, dollars = X, window_s = S (per window; 0 = no such limit)."""
    from fastpath.control.budgets import Budget

    out = {}
    for tenant, b in t.items():
        w = f"budgets.{tenant}"
        if not isinstance(b, dict):
            raise ConfigError(f"{w}: expected a table with tokens, dollars and window_s")
        check_keys(b, ("tokens", "dollars", "window_s"), w)
        budget = Budget(tenant, _num(b, "tokens", w, 0.0), _num(b, "dollars", w, 0.0), _num(b, "window_s", w, 86400.0))
        if not (budget.tokens or budget.dollars) or budget.window_s <= 0:
            raise ConfigError(f"{w}: set tokens or dollars (per window) and a positive window_s")
        out[tenant] = budget
    return out


def _model_groups(t: dict[str, Any]) -> dict[str, ModelGroup]:
    out = {}
    for model, g in t.items():
        w = f"model_groups.{model}"
        if not isinstance(g, dict):
            raise ConfigError(f"{w}: expected a table with substitutes = [...] and penalty")
        check_keys(g, ("substitutes", "penalty"), w)
        subs = g.get("substitutes", [])
        if not isinstance(subs, list) or not subs or not all(isinstance(x, str) and x for x in subs):
            raise ConfigError(f"{w}.substitutes: expected a non-empty list of model names, in order of preference")
        if model in subs:
            raise ConfigError(f"{w}.substitutes: {model!r} cannot substitute for itself")
        out[model] = ModelGroup(model, tuple(subs), _num(g, "penalty", w, ModelGroup.penalty))
    return out


def _prefix(t: dict[str, Any]) -> PrefixConfig:
    w = "router.prefix"
    check_keys(t, _keys_of(PrefixConfig), w)
    d = PrefixConfig()
    p = PrefixConfig(
        enabled=_bool(t, "enabled", w, d.enabled),
        input_name=_str(t, "input_name", w, d.input_name),
        block_bytes=int(_num(t, "block_bytes", w, d.block_bytes)),
        max_prompt_bytes=int(_num(t, "max_prompt_bytes", w, d.max_prompt_bytes)),
        min_match_blocks=int(_num(t, "min_match_blocks", w, d.min_match_blocks)),
        capacity_blocks=int(_num(t, "capacity_blocks", w, d.capacity_blocks)),
        ttl_s=_num(t, "ttl_s", w, d.ttl_s),
        load_bound=_num(t, "load_bound", w, d.load_bound),
        ship_blocks=int(_num(t, "ship_blocks", w, d.ship_blocks)),
    )
    if p.block_bytes < 1 or p.max_prompt_bytes < 0 or p.min_match_blocks < 1 or p.capacity_blocks < 1:
        raise ConfigError(f"{w}: block_bytes, min_match_blocks and capacity_blocks must be at least 1, "
                          f"max_prompt_bytes at least 0")
    return p


def _hedge(t: dict[str, Any]) -> HedgeConfig:
    w = "router.hedge"
    if not isinstance(t, dict):
        raise ConfigError(f"{w}: expected a table, e.g. [router.hedge] enabled = true")
    check_keys(t, _keys_of(HedgeConfig), w)
    d = HedgeConfig()
    h = HedgeConfig(
        enabled=_bool(t, "enabled", w, d.enabled),
        after=_str(t, "after", w, d.after),
        factor=_num(t, "factor", w, d.factor),
        min_ms=_num(t, "min_ms", w, d.min_ms),
        budget_percent=_num(t, "budget_percent", w, d.budget_percent),
        budget_burst=_num(t, "budget_burst", w, d.budget_burst),
    )
    if h.after not in HEDGE_AFTER:
        raise ConfigError(f"{w}.after = {h.after!r}: expected one of {', '.join(HEDGE_AFTER)}")
    if not (h.factor > 0 and h.min_ms >= 0 and 0 <= h.budget_percent <= 100 and h.budget_burst >= 1):
        raise ConfigError(f"{w}: factor must be positive, min_ms at least 0, budget_percent within 0..100 "
                          f"and budget_burst at least 1")
    return h


def default_config_text() -> str:
    return resources.files("fastpath").joinpath("default_config.toml").read_text()


def load_config(path: str | Path | None = None) -> Config:
    """Loads `path`, or the embedded default when path is None."""
    if path is None:
        return parse_config(tomllib.loads(default_config_text()), "<embedded default>")
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config {p}: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    return parse_config(data, str(p))


def with_offload(config: Config, driver: str) -> Config:
    """A copy of `config` whose [offload] driver is `driver` (a command line's --offload)."""
    import copy

    data = copy.deepcopy(config.raw)
    data.setdefault("offload", {})["driver"] = driver
    return parse_config(data, config.source + f" (offload {driver})")


def with_ports(config: Config, base_port: int) -> Config:
    """A copy of `config` with every listening port moved to base_port, base_port+1, ...

    Tests and benchmarks run several fleets side by side; this keeps them apart.
    """
    import copy

    data = copy.deepcopy(config.raw)
    port = base_port

    def nxt() -> int:
        nonlocal port
        port += 1
        return port - 1

    data.setdefault("proxy", {})["listen"] = f"127.0.0.1:{nxt()}"
    data["proxy"]["metrics_listen"] = f"127.0.0.1:{nxt()}"
    data.setdefault("control", {})["listen"] = f"127.0.0.1:{nxt()}"
    data["control"]["metrics_listen"] = "127.0.0.1:0"  # any free port (the controller logs which)
    for b in data["backends"]:
        b["address"] = f"127.0.0.1:{nxt()}"
        if b.get("metrics_url"):
            b["metrics_url"] = f"http://127.0.0.1:{nxt()}/metrics"
    return parse_config(data, config.source + f" (ports from {base_port})")
