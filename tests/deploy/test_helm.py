"""The Helm chart deploy/helm/mom: lint, render with default and all-options values, validate strictly.

Core kinds are validated with kubernetes-validate (strict: unknown fields fail) for the Kubernetes
version the chart targets; the custom resources (ServiceMonitor, ScaledObject, KafkaTopic) against
the JSON schemas in tests/deploy/schemas. Then what the issue asks of the chart is checked on the
rendered objects: one Deployment per service with its probes, the migration hooks, secrets only by
reference, KEDA capped by partitions, and KafkaTopics equal to the catalogue.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

from services.common.catalogue import Catalogue

sys.path.insert(0, str(Path(__file__).parent))
from deploytools import CHART, KUBERNETES_VERSION, REPO_ROOT  # noqa: E402

HERE = Path(__file__).parent
ALL_VALUES = HERE / "values-all.yaml"
SERVICES = ("ingest", "execution", "quality", "maintenance", "inventory")
CONSUMERS = SERVICES[1:]
CUSTOM_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda.sh-v1alpha1.json",
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): "kafkatopic-kafka.strimzi.io-v1beta2.json",
}
CORE_KINDS = {"ConfigMap", "Deployment", "Job", "NetworkPolicy", "PodDisruptionBudget", "Secret", "Service",
              "ServiceAccount"}
VARIANTS = {"default": [], "all-options": ["-f", str(ALL_VALUES)]}


def _run(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def render(helm: Path, *values: str, check: bool = True, release: str = "mom") -> list[dict[str, Any]] | str:
    result = _run(helm, "template", release, str(CHART), "--namespace", "mom", "--kube-version",
                  KUBERNETES_VERSION, *values, check=check)
    if result.returncode != 0:
        return result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=list(VARIANTS))
def rendered(request: pytest.FixtureRequest, helm: Path) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(helm, *VARIANTS[request.param])


@pytest.fixture(scope="module")
def everything(helm: Path) -> list[dict[str, Any]]:
    return render(helm, *VARIANTS["all-options"])


def _custom_validator(kind_key: tuple[str, str]) -> jsonschema.Validator:
    schemas = {p.name: json.loads(p.read_text()) for p in (HERE / "schemas").glob("*.json")}
    registry = Registry().with_resources(
        [("objectmeta.json", Resource.from_contents(schemas["_objectmeta.json"]))])
    schema = schemas[CUSTOM_SCHEMAS[kind_key]]
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema, registry=registry, format_checker=validator_class.FORMAT_CHECKER)


def validate(doc: dict[str, Any]) -> None:
    """Raise on any violation: strict Kubernetes schemas for core kinds, our CRD schemas for the rest."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CUSTOM_SCHEMAS:
        errors = sorted(_custom_validator(key).iter_errors(doc), key=lambda e: list(e.path))
        if errors:
            raise ValueError("; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors))
        return
    if doc.get("kind") not in CORE_KINDS:
        raise ValueError(f"{key}: a kind the tests have no schema for")
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


# Lint and validation ------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_helm_lint_is_clean(helm: Path, variant: str) -> None:
    result = _run(helm, "lint", str(CHART), "--strict", "--kube-version", KUBERNETES_VERSION, *VARIANTS[variant])
    assert "0 chart(s) failed" in result.stdout


def test_every_rendered_object_validates_strictly(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    variant, docs = rendered
    failures = []
    for doc in docs:
        try:
            validate(doc)
        except Exception as exc:  # noqa: BLE001 - collect every failure with its object's name
            failures.append(f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}: {str(exc)[:400]}")
    assert not failures, f"{variant}:\n" + "\n".join(failures)
    assert len(docs) >= 20


def test_the_validators_are_strict(everything: list[dict[str, Any]]) -> None:
    deployment = copy.deepcopy(next(iter(of_kind(everything, "Deployment").values())))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {"path": "/healthz"}
    with pytest.raises(Exception, match="httpGett"):
        validate(deployment)
    for kind in ("ScaledObject", "ServiceMonitor", "KafkaTopic"):
        doc = copy.deepcopy(next(iter(of_kind(everything, kind).values())))
        doc["spec"]["unknownField"] = 1
        with pytest.raises(ValueError, match="unknownField"):
            validate(doc)
    topic = copy.deepcopy(next(iter(of_kind(everything, "KafkaTopic").values())))
    topic["spec"]["partitions"] = "six"
    with pytest.raises(ValueError, match="partitions"):
        validate(topic)


def test_all_options_render_every_kind(everything: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in everything}
    assert kinds == CORE_KINDS | {"ServiceMonitor", "ScaledObject", "KafkaTopic"}


# What the chart must do -------------------------------------------------------------------------


def test_one_deployment_per_service_running_it_with_its_probes(rendered) -> None:
    variant, docs = rendered
    deployments = of_kind(docs, "Deployment")
    assert sorted(deployments) == sorted(f"mom-{s}" for s in SERVICES)
    for service in SERVICES:
        spec = deployments[f"mom-{service}"]["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        assert container["args"] == ["run", service]
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        names = {e["name"]: e for e in container["env"]}
        assert names["MOM_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "password"
        if service == "ingest":
            assert "secretKeyRef" in names["MOM_INGEST_TOKENS"]["valueFrom"]
            assert "MOM_DATABASE_URL" not in names
        else:
            assert names["MOM_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == service


def test_replicas_are_left_to_keda_only_when_it_scales_the_service(helm: Path, everything) -> None:
    defaults = of_kind(render(helm), "Deployment")
    assert defaults["mom-execution"]["spec"]["replicas"] == 2 and defaults["mom-quality"]["spec"]["replicas"] == 1
    scaled = of_kind(everything, "Deployment")
    assert "replicas" not in scaled["mom-execution"]["spec"]
    # one replica of these consumes and the others stand by: KEDA leaves them as the values say (values-all: 2)
    assert all(scaled[f"mom-{s}"]["spec"]["replicas"] == 2 for s in ("quality", "maintenance", "inventory"))
    assert scaled["mom-ingest"]["spec"]["replicas"] == 3


def test_migrations_run_as_pre_install_and_pre_upgrade_hooks_per_service(rendered) -> None:
    _variant, docs = rendered
    jobs = {name: job for name, job in of_kind(docs, "Job").items() if name.endswith("-migrate")}
    assert sorted(jobs) == sorted(f"mom-{s}-migrate" for s in CONSUMERS)
    for service in CONSUMERS:
        job = jobs[f"mom-{service}-migrate"]
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["migrate", service]
        url = next(e for e in container["env"] if e["name"] == "MOM_DATABASE_URL")
        assert url["valueFrom"]["secretKeyRef"]["key"] == service


def test_topics_job_runs_before_the_migrations(everything) -> None:
    jobs = of_kind(everything, "Job")
    topics = jobs["mom-topics-apply"]
    assert topics["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["topics", "apply"]
    assert int(topics["metadata"]["annotations"]["helm.sh/hook-weight"]) < \
        int(jobs["mom-execution-migrate"]["metadata"]["annotations"]["helm.sh/hook-weight"])


def test_no_secret_material_is_rendered(rendered) -> None:
    variant, docs = rendered
    secrets = of_kind(docs, "Secret")
    if variant == "default":
        assert secrets == {}
        return
    (secret,) = secrets.values()
    entries = secret["stringData"]["tokens"].split(",")
    assert entries and all("sha256:" in e and len(e.rsplit(":", 1)[1]) == 64 for e in entries)


def test_kafka_users_per_service_and_the_ca_are_wired(everything) -> None:
    deployments = of_kind(everything, "Deployment")
    for service in SERVICES:
        spec = deployments[f"mom-{service}"]["spec"]["template"]["spec"]
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        assert env["MOM_KAFKA_SASL_USERNAME"]["valueFrom"]["secretKeyRef"]["name"] == f"mom-{service}"
        assert env["MOM_KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
        assert env["MOM_KAFKA_SSL_CA_LOCATION"]["value"] == "/etc/mom/kafka-ca/ca.crt"
        assert any(v.get("secret", {}).get("secretName") == "my-cluster-cluster-ca-cert" for v in spec["volumes"])


def test_plain_ingest_tokens_in_values_are_refused(helm: Path, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"ingest": {"tokens": ["erp:a-plain-secret-token-in-values"]}}))
    error = render(helm, "-f", str(values), check=False)
    assert isinstance(error, str) and "mom token hash" in error


def test_pod_disruption_budgets_and_network_policies(rendered) -> None:
    variant, docs = rendered
    pdbs = of_kind(docs, "PodDisruptionBudget")
    expected = {"mom-ingest", "mom-execution"} if variant == "default" else {f"mom-{s}" for s in SERVICES}
    assert set(pdbs) == expected
    assert all(p["spec"]["maxUnavailable"] == 1 for p in pdbs.values())
    policies = of_kind(docs, "NetworkPolicy")
    assert set(policies) == {f"mom-{s}" for s in SERVICES}
    for policy in policies.values():
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
        assert {53, 9093, 5432} <= ports


def test_service_monitor_selects_every_service(everything) -> None:
    (monitor,) = of_kind(everything, "ServiceMonitor").values()
    wanted = monitor["spec"]["selector"]["matchLabels"]
    services = [s for s in of_kind(everything, "Service").values()
                if all(s["metadata"]["labels"].get(k) == v for k, v in wanted.items())]
    assert len(services) == len(SERVICES)
    assert monitor["spec"]["endpoints"][0]["port"] == "http" and monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_keda_scales_consumers_on_lag_never_beyond_partitions(helm: Path, everything, tmp_path: Path) -> None:
    scaled = of_kind(everything, "ScaledObject")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(scaled) == {f"mom-{s}" for s in CONSUMERS if values["services"][s]["scalesOut"]} == {"mom-execution"}
    for service in ("execution",):
        spec = scaled[f"mom-{service}"]["spec"]
        assert spec["scaleTargetRef"]["name"] == f"mom-{service}"
        assert spec["maxReplicaCount"] <= values["services"][service]["partitions"]
        (trigger,) = spec["triggers"]
        assert "mom_consumer_lag_events" in trigger["metadata"]["query"]
        assert f'service="{service}"' in trigger["metadata"]["query"]
    too_many = tmp_path / "too-many.yaml"
    too_many.write_text(yaml.safe_dump({"keda": {"enabled": True, "maxReplicas": 7}}))
    error = render(helm, "-f", str(too_many), check=False)
    assert isinstance(error, str) and "exceeds services.execution.partitions (6)" in error


def test_service_partitions_in_values_exist_in_the_catalogue() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    most = max(topic.partitions for topic in Catalogue.load().topics.values())
    for service in CONSUMERS:
        assert 1 <= values["services"][service]["partitions"] <= most


# Strimzi topics from the catalogue ---------------------------------------------------------------


def _generator():
    spec = importlib.util.spec_from_file_location("generate_topics", REPO_ROOT / "deploy" / "helm" / "generate_topics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_committed_kafkatopic_template_is_generated_from_the_current_catalogue() -> None:
    generator = _generator()
    wanted = generator.render((REPO_ROOT / "schemas" / "topics.yaml").read_text())
    assert generator.TARGET.read_text() == wanted, \
        "deploy/helm/mom/templates/kafkatopics.yaml is stale: run python deploy/helm/generate_topics.py"


def test_rendered_kafkatopics_equal_the_catalogue(everything) -> None:
    catalogue = Catalogue.load()
    topics = {t["spec"]["topicName"]: t for t in of_kind(everything, "KafkaTopic").values()}
    assert set(topics) == set(catalogue.topics)
    for name, topic in catalogue.topics.items():
        spec = topics[name]["spec"]
        assert spec["partitions"] == topic.partitions
        assert spec["replicas"] == 3
        expected = {k: str(v) for k, v in topic.config.items() if k != "min.insync.replicas"}
        assert spec["config"] == {**expected, "min.insync.replicas": "2"}
        assert topics[name]["metadata"]["namespace"] == "kafka"
        assert topics[name]["metadata"]["labels"]["strimzi.io/cluster"] == "my-cluster"
        assert topics[name]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_the_batch_cap_is_each_services_own_unless_the_values_set_one(helm: Path, tmp_path: Path) -> None:
    (config,) = of_kind(render(helm), "ConfigMap").values()
    assert "MOM_BATCH_MAX_EVENTS" not in config["data"]  # execution 20,000, the others 10,000 (settings.py)
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"config": {"batchMaxEvents": 5000}}))
    (config,) = of_kind(render(helm, "-f", str(values)), "ConfigMap").values()
    assert config["data"]["MOM_BATCH_MAX_EVENTS"] == "5000"
