"""Tests of the Helm chart in helm/arbiter.

They render the chart with the real `helm`, check every rendered object against the
Kubernetes schemas offline (kubernetes-validate, strict), check that bad values are
refused, and run the real `arbiter` binary exactly as the rendered pod would: same
command, args and environment, with only mount paths and ports moved to a temp dir.

scripts/test.sh runs them with ARBITER_HELM and ARBITER_BIN set. Without those tools
the tests fail rather than skip: the script decides whether the step runs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import grpc
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "arbiter"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion; native gRPC probes
# are GA since 1.27) and a current one.
KUBE_VERSIONS = ["1.27.0", "1.35.0"]
IMAGE_COMMAND = "/usr/local/bin/arbiter"


def helm_path() -> str:
    path = os.environ.get("ARBITER_HELM") or shutil.which("helm")
    if not path:
        pytest.fail("helm not found: set ARBITER_HELM (scripts/test.sh installs it)")
    return path


def arbiter_path() -> Path:
    env = os.environ.get("ARBITER_BIN")
    if env:
        path = Path(env)
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
        path = target / "debug" / "arbiter"
    if not path.is_file():
        pytest.fail(f"{path} missing: build it with `cargo build --bins`")
    return path


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm_path(), *args], capture_output=True, text=True, check=False
    )


def render(*args: str, kube_version: str = KUBE_VERSIONS[-1]) -> list[dict]:
    out = helm(
        "template", "arb", str(CHART), "--kube-version", kube_version, *args
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def one(objs: list[dict], kind: str) -> dict:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[o['kind'] for o in objs]}"
    return found[0]


def kinds(objs: list[dict]) -> list[str]:
    return sorted(o["kind"] for o in objs)


def server_container(objs: list[dict]) -> dict:
    workload = [o for o in objs if o["kind"] in ("StatefulSet", "Deployment")]
    assert len(workload) == 1
    (container,) = workload[0]["spec"]["template"]["spec"]["containers"]
    return container


def container_port(container: dict, name: str) -> int:
    return next(p["containerPort"] for p in container["ports"] if p["name"] == name)


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


# ---------------------------------------------------------------------------
# lint and schema validation


@pytest.mark.parametrize("values", [None, *EXAMPLES], ids=lambda v: v.name if v else "defaults")
def test_helm_lint_strict_passes(values):
    args = ["lint", "--strict", str(CHART)]
    if values:
        args += ["-f", str(values)]
    out = helm(*args)
    assert out.returncode == 0, out.stdout + out.stderr


# Value sets beyond the examples that the docs describe: bootstrap of each mode, no
# metrics, chart-managed database URL, every optional object at once.
VARIANTS = {
    "defaults": [],
    "embedded-bootstrap": ["-f", str(CHART / "examples/embedded.yaml"), "--set", "bootstrap.enabled=true"],
    "postgres-bootstrap": ["-f", str(CHART / "examples/postgres.yaml"), "--set", "bootstrap.enabled=true"],
    "no-metrics": ["--set", "metrics.enabled=false"],
    "postgres-url-everything": [
        "--set", "mode=postgres", "--set", "keys.existingSecret=k",
        "--set", "database.url=postgres://a:b@db:5432/arbiter",
        "--set", "networkPolicy.enabled=true", "--set", "metrics.serviceMonitor.enabled=true",
        "--set", "tracing.otlpEndpoint=http://otel:4317", "--set", "autoscaling.enabled=true",
        "--set", "tls.enabled=true", "--set", "tls.existingSecret=t", "--set", "tls.clientAuth=optional",
    ],
}
for example in EXAMPLES:
    VARIANTS[example.stem] = ["-f", str(example)]

# The MCP gateway in the server process: plain, and in front of mTLS with every optional
# object (network policy, console, metrics).
GATEWAY = {"upstreams": [{"name": "search", "http": {"url": "https://search.internal/mcp",
                                                     "headers": {"Authorization": "Bearer upstream-token"}}}]}
GATEWAY_ON = ["--set", "mcpGateway.enabled=true", "--set-json", f"mcpGateway.config={json.dumps(GATEWAY)}"]
VARIANTS["mcp-gateway"] = GATEWAY_ON
VARIANTS["mcp-gateway-mtls-everything"] = [
    "-f", str(CHART / "examples/postgres-tls.yaml"), *GATEWAY_ON,
    "--set", "mcpGateway.tls.clientSecret=gateway-client", "--set", "console.enabled=true",
    "--set-json", 'networkPolicy.mcpFrom=[{"podSelector":{"matchLabels":{"app":"agent"}}}]',
]


def check_service_monitor(obj: dict) -> None:
    # No Kubernetes schema covers the prometheus-operator CRD; check the fields we set.
    assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(obj["spec"]) == {"selector", "endpoints"}
    for ep in obj["spec"]["endpoints"]:
        assert set(ep) <= {"port", "path", "interval", "scrapeTimeout"}, ep


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rendered_objects_are_valid_kubernetes(variant, kube_version):
    objs = render(*VARIANTS[variant], kube_version=kube_version)
    assert objs
    for obj in objs:
        if obj["kind"] == "ServiceMonitor":
            check_service_monitor(obj)
            continue
        kubernetes_validate.validate(obj, kube_version, strict=True)


def test_strict_validation_rejects_an_unknown_field():
    # The validation above means something only if a misspelt field fails it.
    objs = render("-f", str(CHART / "examples/embedded.yaml"))
    sts = one(objs, "StatefulSet")
    sts["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, KUBE_VERSIONS[-1], strict=True)


BAD_VALUES = {
    "unknown mode": (["--set", "mode=sqlite"], "mode"),
    "unknown top-level key": (["--set", "replicas=3"], "replicas"),
    "unknown nested key": (["--set", "metrics.path=/m"], "path"),
    "zero replicas": (["--set", "replicaCount=0"], "replicaCount"),
    "port out of range": (["--set", "grpc.port=70000"], "port"),
    "client auth typo": (["--set", "tls.clientAuth=sometimes"], "clientAuth"),
    "writable root filesystem": (["--set", "securityContext.readOnlyRootFilesystem=false"], "readOnlyRootFilesystem"),
    "privilege escalation": (["--set", "securityContext.allowPrivilegeEscalation=true"], "allowPrivilegeEscalation"),
    "capabilities kept": (["--set", "securityContext.capabilities.drop={NET_RAW}"], "drop"),
    "root pod": (["--set", "podSecurityContext.runAsNonRoot=false"], "runAsNonRoot"),
    "bad digest": (["--set", "image.digest=latest"], "digest"),
    "replicas as string": (["--set-string", "replicaCount=two"], "replicaCount"),
    "unknown config section": (["--set", "config.storge.synchronous=full"], "storge"),
    "postgres without keys": (["--set", "mode=postgres", "--set", "database.existingSecret=db"], "existingSecret"),
    "postgres without database": (["--set", "mode=postgres", "--set", "keys.existingSecret=k"], "database"),
    "database url not postgres": (["--set", "mode=postgres", "--set", "keys.existingSecret=k", "--set", "database.url=mysql://x"], "url"),
    "tls without secret": (["--set", "tls.enabled=true"], "existingSecret"),
    "mtls without tls": (["--set", "tls.clientAuth=required"], "tls.enabled"),
    "autoscaling in embedded mode": (["--set", "autoscaling.enabled=true"], "mode"),
    "metrics on the grpc port": (["--set", "metrics.port=50051"], "must differ"),
    "service monitor without metrics": (["--set", "metrics.enabled=false", "--set", "metrics.serviceMonitor.enabled=true"], "metrics.enabled"),
    "unknown mcpGateway key": (["--set", "mcpGateway.listen=0.0.0.0:1"], "listen"),
    "unknown gateway.yaml section": (["--set", "mcpGateway.config.upstream_timout=1s"], "upstream_timout"),
    "gateway port out of range": (["--set", "mcpGateway.port=0"], "port"),
    "gateway upstreams not a list": (["--set", "mcpGateway.config.upstreams=x"], "upstreams"),
    "gateway without upstreams": (["--set", "mcpGateway.enabled=true"], "mcpGateway.config.upstreams"),
    "gateway with an endpoint": ([*GATEWAY_ON, "--set", "mcpGateway.config.arbiter.endpoint=http://x:1"], "arbiter.endpoint"),
    "gateway with its own tls_ca": ([*GATEWAY_ON, "--set", "mcpGateway.config.arbiter.tls_ca=/x"], "arbiter.tls_ca"),
    "gateway listen address": ([*GATEWAY_ON, "--set", "mcpGateway.config.listen.addr=0.0.0.0:1"], "mcpGateway.port"),
    "gateway on the grpc port": ([*GATEWAY_ON, "--set", "mcpGateway.port=50051"], "must differ"),
    "gateway file twice": ([*GATEWAY_ON, "--set", "mcpGateway.existingSecret=s"], "not both"),
    "gateway under required mtls without a certificate": (["-f", str(CHART / "examples/postgres-tls.yaml"), *GATEWAY_ON], "mcpGateway.tls.clientSecret"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_values_are_refused(case):
    args, needle = BAD_VALUES[case]
    out = helm("template", "arb", str(CHART), "--kube-version", KUBE_VERSIONS[-1], *args)
    assert out.returncode != 0, f"{case}: rendered anyway"
    assert needle in out.stderr, out.stderr


# ---------------------------------------------------------------------------
# what the chart renders


def test_embedded_mode_is_one_statefulset_replica_with_a_volume():
    objs = render("-f", str(CHART / "examples/embedded.yaml"), "--set", "replicaCount=5")
    assert "Deployment" not in kinds(objs) and "Job" not in kinds(objs)
    assert "HorizontalPodAutoscaler" not in kinds(objs)
    assert "PodDisruptionBudget" not in kinds(objs)
    sts = one(objs, "StatefulSet")
    assert sts["spec"]["replicas"] == 1
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    mounts = {m["name"]: m["mountPath"] for m in server_container(objs)["volumeMounts"]}
    assert mounts["data"] == env_of(server_container(objs))["ARBITER_STORAGE__DATA_DIR"]["value"]


def test_postgres_mode_is_a_deployment_with_a_migration_hook():
    objs = render("-f", str(CHART / "examples/postgres.yaml"))
    assert "StatefulSet" not in kinds(objs)
    assert "PersistentVolumeClaim" not in kinds(objs)
    dep = one(objs, "Deployment")
    assert "replicas" not in dep["spec"], "the HPA owns the replica count"
    hpa = one(objs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] == 3
    job = one(objs, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["command"] == [IMAGE_COMMAND] and migrate["args"] == ["migrate"]
    url = env_of(migrate)["ARBITER_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert url == {"name": "arbiter-database", "key": "url"}
    assert env_of(server_container(objs))["ARBITER_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == url
    # The migration pods must not receive traffic nor count for the PDB.
    service = one([o for o in objs if o["kind"] == "Service"], "Service")
    job_labels = job["spec"]["template"]["metadata"]["labels"]
    assert not all(job_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    pdb = one(objs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]


def test_chart_managed_database_url_exists_before_the_migration_hook():
    objs = render("--set", "mode=postgres", "--set", "keys.existingSecret=k",
                  "--set", "database.url=postgres://a:b@db/arbiter")
    secret = one(objs, "Secret")
    job = one(objs, "Job")
    assert "pre-install" in secret["metadata"]["annotations"]["helm.sh/hook"]
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )


def test_probes_are_native_grpc_on_the_grpc_port():
    objs = render("-f", str(CHART / "examples/embedded.yaml"))
    c = server_container(objs)
    port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["grpc"] == {"port": port}
    assert env_of(c)["ARBITER_SERVER__LISTEN"]["value"] == f"0.0.0.0:{port}"


def test_tls_mounts_the_certificates_and_falls_back_to_tcp_probes():
    objs = render("-f", str(CHART / "examples/postgres-tls.yaml"))
    c = server_container(objs)
    env = env_of(c)
    assert env["ARBITER_SERVER__TLS__CLIENT_AUTH"]["value"] == "required"
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    for key in ("CERT_FILE", "KEY_FILE", "CLIENT_CA_FILE"):
        assert str(Path(env[f"ARBITER_SERVER__TLS__{key}"]["value"]).parent) in mounts
    for probe in ("livenessProbe", "readinessProbe"):
        assert "grpc" not in c[probe] and c[probe]["tcpSocket"] == {"port": "grpc"}


def test_bootstrap_listens_on_loopback_with_one_replica_and_no_probes():
    objs = render("-f", str(CHART / "examples/postgres.yaml"), "--set", "bootstrap.enabled=true")
    dep = one(objs, "Deployment")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    assert "HorizontalPodAutoscaler" not in kinds(objs)
    c = server_container(objs)
    env = env_of(c)
    assert env["ARBITER_SERVER__LISTEN"]["value"] == "127.0.0.1:50051"
    assert env["ARBITER_ADDR"]["value"] == "http://127.0.0.1:50051", "for kubectl exec"
    assert "livenessProbe" not in c and "readinessProbe" not in c


def test_bootstrap_serves_plaintext_on_loopback_even_with_tls_configured():
    # The CLI run by `kubectl exec` has no CA or client certificate; loopback is private.
    objs = render("-f", str(CHART / "examples/postgres-tls.yaml"), "--set", "bootstrap.enabled=true")
    c = server_container(objs)
    assert not [n for n in env_of(c) if n.startswith("ARBITER_SERVER__TLS__")]
    assert env_of(c)["ARBITER_SERVER__LISTEN"]["value"].startswith("127.0.0.1:")
    objs = render("-f", str(CHART / "examples/postgres-tls.yaml"))
    assert "ARBITER_ADDR" not in env_of(server_container(objs))


def test_console_port_env_and_policy_follow_the_switch():
    off = server_container(render())
    assert "ARBITER_CONSOLE__LISTEN" not in env_of(off)
    assert all(p["name"] != "http-console" for p in off["ports"])
    objs = render("--set", "console.enabled=true", "--set", "console.publicUrl=https://arbiter.example.com",
                  "--set", "networkPolicy.enabled=true",
                  "--set-json", 'networkPolicy.consoleFrom=[{"podSelector":{"matchLabels":{"app":"ops"}}}]')
    on = server_container(objs)
    assert env_of(on)["ARBITER_CONSOLE__LISTEN"]["value"] == "0.0.0.0:9464"
    assert env_of(on)["ARBITER_CONSOLE__PUBLIC_URL"]["value"] == "https://arbiter.example.com"
    assert {"name": "http-console", "containerPort": 9464, "protocol": "TCP"} in on["ports"]
    svc = one([o for o in objs if o["kind"] == "Service" and "clusterIP" not in o["spec"]], "Service")
    assert "http-console" in [p["name"] for p in svc["spec"]["ports"]]
    policy = one([o for o in objs if o["kind"] == "NetworkPolicy"], "NetworkPolicy")
    assert any(r["ports"] == [{"port": "http-console", "protocol": "TCP"}] for r in policy["spec"]["ingress"])
    assert "ARBITER_CONSOLE__TLS" not in env_of(on)
    tls = server_container(render("--set", "console.enabled=true", "--set", "console.tls=true",
                                  "--set", "tls.enabled=true", "--set", "tls.existingSecret=t"))
    assert env_of(tls)["ARBITER_CONSOLE__TLS"]["value"] == "true"
    refused = helm("template", "arb", str(CHART), "--set", "console.tls=true")
    assert refused.returncode != 0 and "console.tls needs tls.enabled" in refused.stderr
    # Without principals the server serves nothing off loopback: bootstrap keeps it there.
    boot = server_container(render("--set", "console.enabled=true", "--set", "bootstrap.enabled=true"))
    assert env_of(boot)["ARBITER_CONSOLE__LISTEN"]["value"] == "127.0.0.1:9464"


def gateway_file(objs: list[dict]) -> dict:
    secret = one([o for o in objs if o["kind"] == "Secret"], "Secret")
    assert secret["metadata"]["name"] == "arb-arbiter-mcp-gateway"
    return yaml.safe_load(secret["stringData"]["gateway.yaml"])


def test_the_mcp_gateway_is_off_by_default_and_renders_nothing_then():
    for args in ([], ["-f", str(CHART / "examples/postgres-tls.yaml")]):
        text = helm("template", "arb", str(CHART), "--kube-version", KUBE_VERSIONS[-1], *args).stdout
        assert "mcp" not in text.lower(), "no gateway object, port, env or annotation"


def test_the_mcp_gateway_port_env_secret_and_service_follow_the_switch():
    objs = render(*GATEWAY_ON, "--set", "mcpGateway.allowedHosts={mcp.example.com}",
                  "--set", "mcpGateway.allowedOrigins={https://agents.example.com}")
    c = server_container(objs)
    assert env_of(c)["ARBITER_MCP_GATEWAY__CONFIG"]["value"] == "/etc/arbiter/mcp-gateway/gateway.yaml"
    assert {"name": "http-mcp", "containerPort": 8765, "protocol": "TCP"} in c["ports"]
    assert {"name": "mcp-gateway", "mountPath": "/etc/arbiter/mcp-gateway", "readOnly": True} in c["volumeMounts"]
    svc = one([o for o in objs if o["kind"] == "Service" and "clusterIP" not in o["spec"]], "Service")
    assert {"name": "http-mcp", "port": 8765, "targetPort": "http-mcp", "protocol": "TCP",
            "appProtocol": "http"} in svc["spec"]["ports"]
    # Upstream credentials are in a Secret, never in a ConfigMap.
    assert not [o for o in objs if o["kind"] == "ConfigMap" and "upstream-token" in json.dumps(o)]
    gw = gateway_file(objs)
    assert gw["upstreams"] == GATEWAY["upstreams"]
    assert "endpoint" not in gw.get("arbiter", {}), "the server is the endpoint"
    assert gw["listen"]["addr"] == "0.0.0.0:8765"
    assert {"arb-arbiter", "arb-arbiter.default.svc", "127.0.0.1", "mcp.example.com"} <= set(gw["listen"]["allowed_hosts"])
    assert gw["listen"]["allowed_origins"] == ["https://agents.example.com"]
    # While bootstrapping, loopback only like the rest.
    assert gateway_file(render(*GATEWAY_ON, "--set", "bootstrap.enabled=true"))["listen"]["addr"] == "127.0.0.1:8765"


def test_the_gateway_trusts_the_servers_ca_and_presents_its_client_certificate_over_mtls():
    objs = render("-f", str(CHART / "examples/postgres-tls.yaml"), *GATEWAY_ON,
                  "--set", "mcpGateway.tls.clientSecret=gateway-client")
    gw = gateway_file(objs)
    assert gw["arbiter"] == {"tls_ca": "/etc/arbiter/mcp-gateway-ca/ca.crt",
                             "tls_cert": "/etc/arbiter/mcp-gateway-client/tls.crt",
                             "tls_key": "/etc/arbiter/mcp-gateway-client/tls.key"}
    c = server_container(objs)
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["mcp-gateway-ca"] == "/etc/arbiter/mcp-gateway-ca"
    assert mounts["mcp-gateway-client"] == "/etc/arbiter/mcp-gateway-client"
    pod = one([o for o in objs if o["kind"] == "Deployment"], "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["mcp-gateway-ca"]["secret"]["secretName"] == "arbiter-tls"
    assert volumes["mcp-gateway-client"]["secret"]["secretName"] == "gateway-client"
    # During bootstrap the server speaks plaintext, so the gateway does too.
    boot = gateway_file(render("-f", str(CHART / "examples/postgres-tls.yaml"), *GATEWAY_ON,
                               "--set", "mcpGateway.tls.clientSecret=gateway-client", "--set", "bootstrap.enabled=true"))
    assert "arbiter" not in boot


def test_a_gateway_file_change_rolls_the_pods_and_an_existing_secret_is_used_as_is():
    def annotation(*args):
        sts = one(render(*GATEWAY_ON, *args), "StatefulSet")
        return sts["spec"]["template"]["metadata"].get("annotations", {}).get("checksum/mcp-gateway")

    base = annotation()
    assert base and annotation("--set", "mcpGateway.config.approval_wait=5s") != base
    # The gateway reads its file only at start: it rolls whatever policy.rollOnChange says.
    assert annotation("--set", "policy.rollOnChange=false") == base
    objs = render("--set", "mcpGateway.enabled=true", "--set", "mcpGateway.existingSecret=my-gateway")
    assert "Secret" not in kinds(objs)
    pod = one(objs, "StatefulSet")["spec"]["template"]
    assert "checksum/mcp-gateway" not in pod["metadata"].get("annotations", {})
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["mcp-gateway"]["secret"]["secretName"] == "my-gateway"


def test_metrics_port_and_env_follow_the_switch():
    on = server_container(render())
    assert env_of(on)["ARBITER_METRICS__LISTEN"]["value"] == "0.0.0.0:9090"
    assert {"name": "http-metrics", "containerPort": 9090, "protocol": "TCP"} in on["ports"]
    off_objs = render("--set", "metrics.enabled=false")
    off = server_container(off_objs)
    assert "ARBITER_METRICS__LISTEN" not in env_of(off)
    assert all(p["name"] != "http-metrics" for p in off["ports"])
    svc = one([o for o in off_objs if o["kind"] == "Service" and "clusterIP" not in o["spec"]], "Service")
    assert [p["name"] for p in svc["spec"]["ports"]] == ["grpc"]


def test_a_policy_change_rolls_the_pods_unless_hot_reload_is_chosen():
    def checksum(*args):
        sts = one(render("-f", str(CHART / "examples/embedded.yaml"), *args), "StatefulSet")
        return sts["spec"]["template"]["metadata"].get("annotations", {}).get("checksum/config")

    base = checksum()
    assert base
    assert checksum("--set", "policy.bundle=version: 1") != base
    assert checksum("--set", "config.storage.synchronous=normal") != base
    assert checksum("--set", "policy.rollOnChange=false") is None


def test_pods_run_as_non_root_with_a_read_only_root_and_no_capabilities():
    for objs in (render(), render("-f", str(CHART / "examples/postgres.yaml"))):
        pods = [o["spec"]["template"]["spec"] for o in objs if o["kind"] in ("StatefulSet", "Deployment", "Job")]
        assert pods
        for pod in pods:
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            assert pod["automountServiceAccountToken"] is False
            for c in pod["containers"]:
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True
                assert sc["allowPrivilegeEscalation"] is False
                assert sc["capabilities"]["drop"] == ["ALL"]
                assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])


def test_key_secret_is_mounted_where_the_server_reads_its_keys():
    c = server_container(render("-f", str(CHART / "examples/postgres.yaml")))
    data_dir = env_of(c)["ARBITER_STORAGE__DATA_DIR"]["value"]
    # <data dir>/keys/hmac.json and signing.json are fixed paths in the server.
    assert {"name": "keys", "mountPath": f"{data_dir}/keys", "readOnly": True} in c["volumeMounts"]


def render_notes(tmp: Path, *args: str) -> str:
    # `helm install --dry-run` needs a cluster and `helm template` skips NOTES.txt, so a
    # copy of the chart renders the same file through `tpl` into a ConfigMap.
    chart = tmp / "chart"
    shutil.copytree(CHART, chart)
    shutil.copy(CHART / "templates/NOTES.txt", chart / "notes.txt")
    (chart / "templates/notes-under-test.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data: {notes: {{ tpl (.Files.Get "notes.txt") . | quote }}}\n'
    )
    out = helm("template", "arb", str(chart), "--kube-version", KUBE_VERSIONS[-1],
               "--show-only", "templates/notes-under-test.yaml", *args)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)["data"]["notes"]


def test_notes_print_the_bootstrap_and_next_commands(tmp_path):
    embedded = ["-f", str(CHART / "examples/embedded.yaml")]
    notes = render_notes(tmp_path / "a", *embedded, "--set", "bootstrap.enabled=true")
    assert "exec -it statefulset/arb-arbiter -- arbiter principals create root --role admin" in notes
    assert "--set bootstrap.enabled=false" in notes
    notes = render_notes(tmp_path / "b", *embedded)
    assert "port-forward svc/arb-arbiter 50051:50051" in notes
    assert "arbiter audit verify" in notes and "refusing to serve on 0.0.0.0:50051" in notes
    notes = render_notes(tmp_path / "c", "-f", str(CHART / "examples/postgres-tls.yaml"))
    assert "deployment/arb-arbiter" in notes and "https://127.0.0.1:50051" in notes


# ---------------------------------------------------------------------------
# the rendered pod, run for real


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pod:
    """The server container of a rendered manifest, run as a local process.

    Volumes become directories under `root` (ConfigMaps are written out with their
    items, `data` is kept between runs like a PersistentVolumeClaim); environment values
    under a mount path are moved there; listen addresses get free ports. Nothing else
    from the manifest changes.
    """

    def __init__(self, objs: list[dict], root: Path, secrets: dict[str, dict[str, str]] | None = None,
                 ports: dict[int, int] | None = None):
        self.objs = objs
        workload = next(o for o in objs if o["kind"] in ("StatefulSet", "Deployment"))
        self.pod = workload["spec"]["template"]["spec"]
        self.container = server_container(objs)
        self.root = root
        self.secrets = secrets or {}
        # Container port -> local port; shared by the pods of one volume's life.
        self.ports: dict[int, int] = ports if ports is not None else {}
        self.mounts: dict[str, Path] = {}
        self.rendered_files: list[Path] = []
        # Outer mounts first, so a mount inside another (the key Secret inside the data
        # volume) lands inside its directory, as it does in the container.
        for m in sorted(self.container["volumeMounts"], key=lambda m: len(m["mountPath"])):
            local = Path(self.local_path(m["mountPath"]))
            if local == Path(m["mountPath"]):
                local = root / m["name"]
            self.mounts[m["mountPath"]] = local
            self.materialize(m["name"], local)
        # Files the chart wrote (the gateway's file) name mount paths and container ports
        # too: moved like the environment, once every mount is known.
        for path in self.rendered_files:
            path.write_text(self.localize(path.read_text()))

    def localize(self, text: str) -> str:
        ports = {p["containerPort"] for p in self.container["ports"]}
        text = re.sub(r"/etc/arbiter/[^\s\"']+", lambda m: self.local_path(m.group(0)), text)
        return re.sub(
            r"\b(\d{1,3}(?:\.\d{1,3}){3}):(\d+)\b",
            lambda m: f"{m.group(1)}:{self.local_port(int(m.group(2)))}" if int(m.group(2)) in ports else m.group(0),
            text,
        )

    def materialize(self, name: str, local: Path) -> None:
        volumes = {v["name"]: v for v in self.pod["volumes"]}
        vol = volumes.get(name)
        if vol is None:  # a volumeClaimTemplate: persistent, keep what is there
            local.mkdir(parents=True, exist_ok=True)
            return
        if "configMap" in vol:
            cm = next(
                o for o in self.objs
                if o["kind"] == "ConfigMap" and o["metadata"]["name"] == vol["configMap"]["name"]
            )
            if local.exists():
                shutil.rmtree(local)
            local.mkdir(parents=True)
            items = vol["configMap"].get("items") or [{"key": k, "path": k} for k in cm["data"]]
            for item in items:
                (local / item["path"]).write_text(cm["data"][item["key"]])
        elif "secret" in vol:
            # As the kubelet writes a Secret volume: root-owned files with defaultMode.
            name = vol["secret"]["secretName"]
            rendered = [o for o in self.objs if o["kind"] == "Secret" and o["metadata"]["name"] == name]
            data = rendered[0]["stringData"] if rendered else self.secrets[name]
            local.mkdir(parents=True, exist_ok=True)
            for key, text in data.items():
                path = local / key
                path.write_text(text)
                path.chmod(vol["secret"]["defaultMode"])
                if rendered:
                    self.rendered_files.append(path)
        elif "emptyDir" in vol:
            if local.exists():
                shutil.rmtree(local)
            local.mkdir(parents=True)
        else:
            raise AssertionError(f"volume {name}: the local runner has no source for {vol}")

    def local_path(self, value: str) -> str:
        for mount in sorted(self.mounts, key=len, reverse=True):
            if value == mount or value.startswith(mount + "/"):
                return str(self.mounts[mount]) + value[len(mount):]
        return value

    def local_port(self, port: int) -> int:
        return self.ports.setdefault(port, free_port())

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ARBITER_", "OTEL_"))}
        for e in self.container.get("env", []):
            if "valueFrom" in e:
                # What the kubelet does for secretKeyRef: the Secret's value, or no pod.
                ref = e["valueFrom"]["secretKeyRef"]
                env[e["name"]] = self.secrets[ref["name"]][ref["key"]]
                continue
            value = self.local_path(e["value"])
            # Addresses of the container's ports (listen settings, ARBITER_ADDR).
            m = re.fullmatch(r"(.+):(\d+)", value)
            if m and int(m.group(2)) in {p["containerPort"] for p in self.container["ports"]}:
                value = f"{m.group(1)}:{self.local_port(int(m.group(2)))}"
            env[e["name"]] = value
        return env

    def exec(self, binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
        """`kubectl exec POD -- arbiter ARGS`: the container's environment, nothing else."""
        return subprocess.run([str(binary), *args], check=False, env=self.env(),
                              capture_output=True, text=True, timeout=30)

    def argv(self, binary: Path) -> list[str]:
        command = self.container["command"]
        assert command[0] == IMAGE_COMMAND, "the image's binary path (Dockerfile)"
        return [str(binary), *command[1:], *self.container["args"]]

    def start(self, binary: Path) -> subprocess.Popen[str]:
        cwd = self.root / "cwd"
        cwd.mkdir(exist_ok=True)
        return subprocess.Popen(
            self.argv(binary), env=self.env(), cwd=cwd, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )


def wait_listening(proc: subprocess.Popen[str]) -> str:
    line = proc.stdout.readline()
    if not line.startswith("arbiter listening on"):
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"server did not start: {line!r}\n{err}")
    return line.split()[-1]


def grpc_probe(port: int, service: str, deadline_s: float = 20.0) -> int:
    """What the kubelet's native gRPC probe does: grpc.health.v1 Check, plaintext."""
    end = time.monotonic() + deadline_s
    status = None
    while time.monotonic() < end:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            try:
                status = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=2
                ).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return status
            except grpc.RpcError:
                pass
        time.sleep(0.2)
    raise AssertionError(f"health probe on {port} never SERVING (last status {status})")


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)  # what the kubelet sends first
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, err


def cli(binary: Path, port: int, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    env["ARBITER_ADDR"] = f"http://127.0.0.1:{port}"
    if key:
        env["ARBITER_API_KEY"] = key
    return subprocess.run([str(binary), *args], check=False, env=env, capture_output=True, text=True, timeout=30)


def metrics_supported(binary: Path, tmp: Path) -> bool:
    """Whether this build has the `metrics` settings section (issue 7 adds it). Builds
    without it reject ARBITER_METRICS__LISTEN as an unknown setting, so the chart's
    metrics.enabled=false is the supported value for them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    env["ARBITER_METRICS__LISTEN"] = "127.0.0.1:0"
    out = subprocess.run([str(binary), "migrate", "--data-dir", str(tmp / "probe")],
                         check=False, env=env, capture_output=True, text=True, timeout=30)
    if out.returncode == 0:
        return True
    assert "unknown field" in out.stderr and "metrics" in out.stderr, out.stderr
    return False


def test_the_rendered_embedded_pod_starts_bootstraps_and_passes_its_probes(tmp_path):
    binary = arbiter_path()
    example = CHART / "examples/embedded.yaml"
    extra: list[str] = []
    has_metrics = metrics_supported(binary, tmp_path)
    if not has_metrics:
        warnings.warn("this arbiter build has no metrics.listen setting yet (issue 7): "
                      "running the pod with metrics.enabled=false", stacklevel=1)
        extra = ["--set", "metrics.enabled=false"]

    # 1. The first install: bootstrap.enabled=true. Loopback only, no probes; the
    #    operator creates the first admin with `kubectl exec … arbiter principals create`.
    boot = Pod(render("-f", str(example), "--set", "bootstrap.enabled=true", *extra), tmp_path)
    assert "readinessProbe" not in boot.container
    proc = boot.start(binary)
    try:
        assert wait_listening(proc).startswith("127.0.0.1:")
        grpc_port = boot.local_port(container_port(boot.container, "grpc"))
        created = boot.exec(binary, "principals", "create", "root", "--role", "admin")
        assert created.returncode == 0, created.stderr
        key = re.search(r"arb_\S+", created.stdout).group(0)
    finally:
        code, err = stop(proc)
    assert code == 0, err
    keys = tmp_path / "data" / "keys"
    for name in ("hmac.json", "signing.json"):
        assert (keys / name).stat().st_mode & 0o077 == 0, name

    # 2. Without bootstrap on an empty volume, the server refuses to start: exactly what
    #    NOTES.txt tells the operator to look for.
    objs = render("-f", str(example), *extra)
    fresh = Pod(objs, tmp_path / "fresh")
    proc = fresh.start(binary)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "refusing to serve on 0.0.0.0" in err, err

    # 3. The upgrade to bootstrap.enabled=false on the same volume: it serves on all
    #    addresses and the kubelet's probes pass.
    pod = Pod(objs, tmp_path)
    pod.ports = boot.ports
    proc = pod.start(binary)
    try:
        assert wait_listening(proc).startswith("0.0.0.0:")
        for probe in ("livenessProbe", "readinessProbe"):
            spec = pod.container[probe]["grpc"]
            grpc_probe(pod.local_port(spec["port"]), spec.get("service", ""))
        # The bundle from the ConfigMap is the one serving (its version is its sha256).
        bundle = next(o for o in objs if o["kind"] == "ConfigMap" and "policy.yaml" in o["data"])
        version = hashlib.sha256(bundle["data"]["policy.yaml"].encode()).hexdigest()
        shown = cli(binary, grpc_port, "policy", "show", key=key)
        assert shown.returncode == 0, shown.stderr
        assert version in shown.stdout, shown.stdout
        # Authentication is on: no key, no answer.
        assert cli(binary, grpc_port, "policy", "show").returncode != 0
        if has_metrics:
            metrics_port = pod.local_port(container_port(pod.container, "http-metrics"))
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
                assert r.status == 200 and b"arbiter_" in r.read()
    finally:
        code, err = stop(proc)
    assert code == 0, err
    # A read-only root filesystem: the server wrote only into its volumes.
    assert not any((tmp_path / "cwd").iterdir())


def mcp_post(url: str, key: str, message: dict, session: str | None = None) -> tuple[str | None, list[dict]]:
    """One Streamable HTTP POST as an MCP client sends it; the session id the gateway
    assigned and the JSON-RPC messages it answered (a JSON body or an SSE stream)."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream"}
    if session:
        headers |= {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    req = urllib.request.Request(url, data=json.dumps(message).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read().decode()
        sid = r.headers.get("Mcp-Session-Id")
        if r.headers.get_content_type() == "text/event-stream":
            data = [line[5:].strip() for line in body.splitlines() if line.startswith("data:")]
            return sid, [json.loads(d) for d in data if d]
        return sid, [json.loads(body)] if body.strip() else []


def mcp_result(url: str, key: str, session: str, rid: int, method: str, params: dict) -> dict:
    _, messages = mcp_post(url, key, {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}, session)
    (reply,) = [m for m in messages if m.get("id") == rid]
    assert "result" in reply, reply
    return reply["result"]


def test_the_rendered_pod_serves_the_mcp_gateway_in_the_server_process(tmp_path):
    """mcpGateway.enabled: the pod, run for real, serves MCP on its http-mcp port next to
    gRPC; the in-process gateway authenticates the agent key through the server's own
    gRPC port, shows and forwards only what the chart's policy allows, and stops with the
    server on SIGTERM."""
    binary = arbiter_path()
    calls = tmp_path / "calls.jsonl"
    upstream = {"name": "kb", "stdio": {"command": sys.executable, "args": [str(Path(__file__).with_name("mcp_upstream.py"))],
                                        "env": {"FIXTURE_CALLS": str(calls)}}}
    args = ["-f", str(CHART / "examples/embedded.yaml"), "--set", "mcpGateway.enabled=true",
            "--set-json", f'mcpGateway.config={json.dumps({"upstreams": [upstream], "approval_wait": "0s"})}']
    if not metrics_supported(binary, tmp_path):
        args += ["--set", "metrics.enabled=false"]

    boot = Pod(render(*args, "--set", "bootstrap.enabled=true"), tmp_path)
    proc = boot.start(binary)
    try:
        wait_listening(proc)
        assert proc.stdout.readline().startswith("arbiter mcp-gateway listening on http://127.0.0.1:")
        keys = {}
        for name, extra in (("root", ["--role", "admin"]), ("support-1-runtime", ["--role", "agent", "--agent", "support-1"])):
            created = boot.exec(binary, "principals", "create", name, *extra, *(["--api-key", keys["root"]] if keys else []))
            assert created.returncode == 0, created.stderr
            keys[name] = re.search(r"arb_\S+", created.stdout).group(0)
    finally:
        code, err = stop(proc)
    assert code == 0, err

    objs = render(*args)
    pod = Pod(objs, tmp_path, ports=boot.ports)
    proc = pod.start(binary)
    try:
        assert wait_listening(proc).startswith("0.0.0.0:")
        assert proc.stdout.readline().startswith("arbiter mcp-gateway listening on http://0.0.0.0:")
        spec = pod.container["readinessProbe"]["grpc"]
        grpc_probe(pod.local_port(spec["port"]), spec.get("service", ""))
        url = f"http://127.0.0.1:{pod.local_port(container_port(pod.container, 'http-mcp'))}/mcp"
        key = keys["support-1-runtime"]
        init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "chart-test", "version": "1"}}
        session, _ = mcp_post(url, key, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init})
        assert session
        mcp_post(url, key, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
        tools = mcp_result(url, key, session, 2, "tools/list", {})["tools"]
        assert [t["name"] for t in tools] == ["search_kb"], "delete_ticket is not in the bundle's allow list"
        ran = mcp_result(url, key, session, 3, "tools/call", {"name": "search_kb", "arguments": {"q": "vpn"}})
        assert not ran["isError"] and ran["content"][0]["text"] == "ran search_kb"
        denied = mcp_result(url, key, session, 4, "tools/call", {"name": "delete_ticket", "arguments": {}})
        assert denied["isError"] and "denied by Arbiter" in denied["content"][0]["text"]
        with pytest.raises(urllib.error.HTTPError) as refused:
            mcp_post(url, "arb_not_a_key", {"jsonrpc": "2.0", "id": 5, "method": "ping"})
        assert refused.value.code == 401
    finally:
        code, err = stop(proc)
    assert code == 0, err
    assert [json.loads(line)["name"] for line in calls.read_text().splitlines()] == ["search_kb"]
    assert "shutdown: the MCP gateway stopped" in err, err


class Receiver(http.server.BaseHTTPRequestHandler):
    """A webhook receiver: every POST (headers and body) into the server's queue."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.server.got.put((dict(self.headers.items()), body))  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_webhooks_from_values_are_signed_with_the_secret_the_pod_reads(tmp_path):
    """notifications.endpoints: the URL in the ConfigMap, the signing secret only in the
    environment from a Secret; the rendered pod, run for real, delivers a halt to a local
    receiver signed per Standard Webhooks with that secret."""
    binary = arbiter_path()
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    receiver.got = queue.Queue()  # type: ignore[attr-defined]
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    endpoint = {"name": "ops-team", "url": f"http://127.0.0.1:{receiver.server_port}/hook",
                "events": ["halt.*"], "timeoutMs": 5000,
                "secret": {"secretName": "arbiter-webhooks", "key": "ops"}}
    args = ["-f", str(CHART / "examples/embedded.yaml"), "--set", "bootstrap.enabled=true",
            "--set-json", f"notifications.endpoints=[{json.dumps(endpoint)}]",
            "--set-json", 'config={"audit": {"max_batch": 256}}']
    objs = render(*args)
    config = next(o for o in objs if o["kind"] == "ConfigMap" and "arbiter.toml" in o["data"])
    toml = config["data"]["arbiter.toml"]
    assert 'secret_env = "ARBITER_WEBHOOK_SECRET_OPS_TEAM"' in toml and "max_batch = 256\n" in toml
    assert secret not in json.dumps(objs), "the secret is never in a rendered object"
    pod = Pod(objs, tmp_path, {"arbiter-webhooks": {"ops": secret}})
    proc = pod.start(binary)
    try:
        wait_listening(proc)
        port = pod.local_port(container_port(pod.container, "grpc"))
        halted = cli(binary, port, "halt", "--reason", "chart webhook test")
        assert halted.returncode == 0, halted.stderr
        headers, body = receiver.got.get(timeout=20)  # type: ignore[attr-defined]
    finally:
        code, err = stop(proc)
        receiver.shutdown()
    assert code == 0, err
    event = json.loads(body)
    assert event["type"] == "halt.engaged", event
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert f"v1,{expected}" in headers["webhook-signature"].split(), headers


def secret_file(tmp: Path, name: str, secret: dict[str, str]) -> str:
    path = tmp / f"operator-copy-{name}"
    path.write_text(secret[name])
    return str(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="a Secret volume's files are root-owned; only root can make them so")
def test_keys_from_a_secret_volume_are_the_keys_the_rendered_pod_uses(tmp_path):
    binary = arbiter_path()
    # The operator's key generation (docs/operations.md §3): a scratch server's keys.
    work = tmp_path / "keygen"
    proc = subprocess.Popen([str(binary), "serve", "--data-dir", str(work), "--listen", "127.0.0.1:0"],
                            env={k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")},
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Serving means the SIGTERM handler is installed (it is not yet at the first line).
    grpc_probe(int(wait_listening(proc).rsplit(":", 1)[1]), "")
    assert stop(proc)[0] == 0
    secret = {f.name: f.read_text() for f in (work / "keys").iterdir()}
    assert set(secret) == {"hmac.json", "signing.json", "signing.pub"}

    args = ["-f", str(CHART / "examples/embedded.yaml"), "--set", "keys.existingSecret=arbiter-keys"]
    if not metrics_supported(binary, tmp_path):
        args += ["--set", "metrics.enabled=false"]
    boot = Pod(render(*args, "--set", "bootstrap.enabled=true"), tmp_path / "pod", {"arbiter-keys": secret})
    keys = tmp_path / "pod" / "data" / "keys"
    assert (keys / "hmac.json").stat().st_mode & 0o777 == 0o440
    proc = boot.start(binary)
    try:
        wait_listening(proc)
        port = boot.local_port(container_port(boot.container, "grpc"))
        grpc_probe(port, "")
        checkpoint = cli(binary, port, "audit", "checkpoint", "--out", str(tmp_path / "cp"))
        assert checkpoint.returncode == 0, checkpoint.stderr
        # Signed with the Secret's key: its public half verifies the server's checkpoint.
        extends = cli(binary, port, "audit", "extends", str(tmp_path / "cp"),
                      "--public-key", secret_file(tmp_path, "signing.pub", secret))
        assert extends.returncode == 0, extends.stdout + extends.stderr
    finally:
        code, err = stop(proc)
    assert code == 0, err
    assert "DEVELOPMENT KEYS GENERATED" not in err, err
    # The mounted files are untouched and the checkpoint is signed by the Secret's key.
    assert {f.name: f.read_text() for f in keys.iterdir()} == secret
    origin = json.loads(secret["signing.json"])["origin"]
    assert (tmp_path / "cp").read_text().startswith(origin + "\n")
