"""deploy/kubernetes validates against the Kubernetes API schemas (bundled with kubernetes-validate, so no
cluster and no network), and its parts fit together: the config parses, Services select pods, commands
are real fastpath commands, and only the offload variant has host network and BPF capabilities."""
from __future__ import annotations

import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from fastpath.cli import build_parser
from fastpath.config import parse_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
VERSIONS = ("1.30.0", "1.37.0")  # the documented range: oldest and newest schema checked
VARIANTS = {"plain": ("fastpath.yaml", "proxy.yaml"), "offload": ("fastpath.yaml", "proxy-offload.yaml")}


def docs(*files: str) -> list[dict]:
    out = []
    for f in files:
        out += [d for d in yaml.safe_load_all((DEPLOY / f).read_text()) if d]
    return out


def of_kind(ds: list[dict], kind: str) -> list[dict]:
    return [d for d in ds if d["kind"] == kind]


def pod_specs(ds: list[dict]) -> list[tuple[str, dict]]:
    return [(d["metadata"]["name"], d["spec"]["template"]) for d in ds if d["kind"] in ("Deployment", "DaemonSet")]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_manifest_validates_strictly_against_the_kubernetes_schema(variant, version):
    for d in docs(*VARIANTS[variant]):
        assert kubernetes_validate.validate(d, version, strict=True), d["metadata"]["name"]


def test_the_validator_refuses_a_broken_manifest():
    bad = docs("proxy.yaml")[0]
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "fifty"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[-1], strict=True)
    bad = docs("proxy.yaml")[0]
    bad["spec"]["template"]["spec"]["hostNetwrok"] = True  # a misspelt field: strict schemas refuse it
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[-1], strict=True)


def test_the_configmap_holds_configs_fastpath_accepts_for_one_fleet():
    cm = of_kind(docs("fastpath.yaml"), "ConfigMap")[0]
    cluster = parse_config(tomllib.loads(cm["data"]["fastpath.toml"]), "fastpath.toml")
    sim = parse_config(tomllib.loads(cm["data"]["sim.toml"]), "sim.toml")
    assert [b.name for b in cluster.backends] == [b.name for b in sim.backends]
    svc = {p["port"] for p in next(s for s in of_kind(docs("fastpath.yaml"), "Service")
                                   if s["metadata"]["name"] == "fastpath-sim")["spec"]["ports"]}
    for c, s in zip(cluster.backends, sim.backends):
        assert c.host == "fastpath-sim" and s.host == "0.0.0.0" and c.port == s.port and c.port in svc
        assert c.metrics_url.startswith("http://fastpath-sim:") and int(c.metrics_url.split(":")[2].split("/")[0]) in svc
    assert cluster.proxy.listen.endswith(":50051") and cluster.control.listen.endswith(":50052")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_services_select_pods_and_references_resolve(variant):
    ds = docs(*VARIANTS[variant])
    pods = pod_specs(ds)
    for svc in of_kind(ds, "Service"):
        sel = svc["spec"]["selector"]
        assert any(sel.items() <= t["metadata"]["labels"].items() for _, t in pods), svc["metadata"]["name"]
    secrets = {s["metadata"]["name"]: s for s in of_kind(ds, "Secret")}
    configmaps = {c["metadata"]["name"] for c in of_kind(ds, "ConfigMap")}
    files = set(of_kind(ds, "ConfigMap")[0]["data"])
    for name, t in pods:
        for v in t["spec"].get("volumes", []):
            if "configMap" in v:
                assert v["configMap"]["name"] in configmaps, name
        for c in t["spec"]["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]]["stringData"], name
            # The command is a fastpath command line this version accepts, reading a file the ConfigMap has.
            argv = c["command"]
            assert argv[0] == "fastpath"
            args = build_parser(argv[1:]).parse_args(argv[1:])
            assert not getattr(args, "_missing", None), name
            assert Path(args.config).name in files, name


def test_only_the_offload_proxy_has_host_network_and_bpf_capabilities():
    def proxy(file: str) -> dict:
        return next(t for n, t in pod_specs(docs(file)) if n == "fastpath-proxy")

    plain, offload = proxy("proxy.yaml"), proxy("proxy-offload.yaml")
    assert not plain["spec"].get("hostNetwork")
    for _, t in pod_specs(docs("fastpath.yaml", "proxy.yaml")):
        for c in t["spec"]["containers"]:
            assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert offload["spec"]["hostNetwork"] is True
    c = offload["spec"]["containers"][0]
    assert set(c["securityContext"]["capabilities"]["add"]) == {"BPF", "NET_ADMIN"}
    assert not c["securityContext"].get("privileged")
    assert c["command"][c["command"].index("--offload") + 1] == "ebpf"
