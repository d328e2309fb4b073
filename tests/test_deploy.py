"""The deploy files parse, fit together and match the topic catalogue.

No kubeconform or docker here: the structure each file must have is checked directly (every
YAML and JSON parses, Kubernetes objects are well formed, compose services depend on each
other correctly, the Strimzi topics and ACLs equal what `deploy/generate.py` renders from
`schemas.topics`, workload environments validate as streamrisk Settings, no secret is
written literally, Grafana only queries documented metrics, Prometheus scrapes the workers).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from schemas.settings import load_settings
from schemas.topics import DEFAULT_PREFIX, WORKER_INPUTS, all_specs, by_name

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
K8S = DEPLOY / "k8s"
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|SNAPSHOT_KEY$|KEY_PASSWORD", re.I)
PROTECTED = ("risk.limits", "risk.control")


def _load_generate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_generate", DEPLOY / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@functools.cache
def _k8s_parsed() -> str:
    # Parsed once per session (PyYAML is slow); handed out as JSON so no test can mutate it.
    return json.dumps([doc for path in sorted(K8S.glob("*.yaml")) for doc in _yaml_docs(path)])


def _k8s_objects() -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = json.loads(_k8s_parsed())
    return objects


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [o for o in _k8s_objects() if o["kind"] == kind]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def _documented_metrics() -> set[str]:
    text = (DEPLOY / "README.md").read_text()
    return set(re.findall(r"^\| `(streamrisk_[a-z0-9_]+)` \|", text, re.M))


def _metric_family(name: str) -> str:
    return re.sub(r"_(bucket|sum|count)$", "", name)


def _metrics_in(expr: str) -> set[str]:
    return {_metric_family(m) for m in re.findall(r"\bstreamrisk_[a-z0-9_]+", expr)}


def _containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return containers


def _flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


# --- every file parses ---------------------------------------------------------------------

def _all_files(*suffixes: str) -> Iterator[Path]:
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and path.suffix in suffixes and "secrets" not in path.parts:
            yield path


@pytest.mark.parametrize("path", list(_all_files(".yaml", ".yml")), ids=lambda p: p.name)
def test_every_yaml_file_parses(path: Path) -> None:
    docs = _yaml_docs(path)
    assert docs, f"{path} holds no document"
    assert all(isinstance(d, dict) for d in docs)


@pytest.mark.parametrize("path", list(_all_files(".json")), ids=lambda p: p.name)
def test_every_json_file_parses(path: Path) -> None:
    assert isinstance(json.loads(path.read_text()), dict)


def test_the_deploy_folder_has_what_the_issue_asks_for() -> None:
    for name in ("compose.yaml", "Dockerfile", "README.md", "generate.py",
                 "prometheus/prometheus.yml", "grafana/dashboards/streamrisk.json",
                 "grafana/provisioning/datasources/prometheus.yaml",
                 "grafana/provisioning/dashboards/streamrisk.yaml",
                 "k8s/kafka.yaml", "k8s/topics.yaml", "k8s/users.yaml", "k8s/workers.yaml",
                 "k8s/autoscaling.yaml"):
        assert (DEPLOY / name).is_file(), name


# --- generated files are current -----------------------------------------------------------

def test_generated_manifests_equal_the_generator_output() -> None:
    generate = _load_generate()
    for path, text in generate.rendered().items():
        assert path.read_text() == text, (
            f"{path.relative_to(DEPLOY.parent)} is stale: run `python deploy/generate.py`")


def test_generator_check_mode_reports_current_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert _load_generate().main(["--check"]) == 0
    assert capsys.readouterr().out == ""


# --- Kubernetes ----------------------------------------------------------------------------

def test_every_k8s_object_is_well_formed() -> None:
    objects = _k8s_objects()
    assert len(objects) > 20
    seen: set[tuple[str, str]] = set()
    for obj in objects:
        api = obj.get("apiVersion")
        assert isinstance(api, str) and ("/" in api or api == "v1"), obj
        assert isinstance(obj.get("kind"), str) and obj["kind"][0].isupper(), obj
        meta = obj.get("metadata")
        assert isinstance(meta, dict) and DNS_SUBDOMAIN.match(meta["name"]), obj
        if obj["kind"] != "Namespace":
            assert meta.get("namespace") == "streamrisk", meta["name"]
        assert "spec" in obj or obj["kind"] == "Namespace", meta["name"]
        key = (obj["kind"], meta["name"])
        assert key not in seen, f"duplicate {key}"
        seen.add(key)


def test_kafka_runs_in_kraft_mode_with_authentication_and_acls() -> None:
    (kafka,) = _of_kind("Kafka")
    pools = _of_kind("KafkaNodePool")
    assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
    assert kafka["metadata"]["annotations"]["strimzi.io/node-pools"] == "enabled"
    assert "zookeeper" not in kafka["spec"]
    roles = {role for pool in pools for role in pool["spec"]["roles"]}
    assert roles == {"controller", "broker"}
    assert all(p["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
               for p in pools)
    spec = kafka["spec"]["kafka"]
    assert spec["authorization"]["type"] == "simple"
    assert all(listener["authentication"]["type"] == "scram-sha-512" and listener["tls"]
               for listener in spec["listeners"])
    assert spec["config"]["auto.create.topics.enable"] is False
    assert "topicOperator" in kafka["spec"]["entityOperator"]
    assert "userOperator" in kafka["spec"]["entityOperator"]
    # The broker must accept the largest snapshot a changelog accepts.
    changelog_max = int(by_name("market-worker.changelog").config["max.message.bytes"])
    assert int(spec["config"]["message.max.bytes"]) >= changelog_max


def test_kafka_topics_equal_the_catalogue_changelogs_included() -> None:
    topics = _of_kind("KafkaTopic")
    (kafka,) = _of_kind("Kafka")
    by_topic = {t["spec"]["topicName"]: t for t in topics}
    assert len(by_topic) == len(topics)
    expected = {s.full_name(DEFAULT_PREFIX): s for s in all_specs()}
    assert set(by_topic) == set(expected)
    assert {f"{DEFAULT_PREFIX}{w}.changelog" for w in WORKER_INPUTS} <= set(by_topic)
    for name, spec in expected.items():
        topic = by_topic[name]
        assert topic["spec"]["partitions"] == spec.partitions, name
        assert topic["spec"]["config"] == spec.config, name
        assert topic["spec"]["replicas"] >= 3, name
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    for worker, source in WORKER_INPUTS.items():
        changelog = by_topic[f"{DEFAULT_PREFIX}{worker}.changelog"]["spec"]
        assert changelog["partitions"] == by_topic[DEFAULT_PREFIX + source]["spec"]["partitions"]
        assert changelog["config"]["cleanup.policy"] == "compact"


def _writers(topic: str) -> set[str]:
    """Users any of whose ACLs allow writing `topic` (literal or prefix patterns)."""
    writers = set()
    for user in _of_kind("KafkaUser"):
        for acl in user["spec"]["authorization"]["acls"]:
            res = acl["resource"]
            if res["type"] != "topic" or not {"Write", "All"} & set(acl["operations"]):
                continue
            pattern = res.get("patternType", "literal")
            if (pattern == "literal" and res["name"] in (topic, "*")) or \
                    (pattern == "prefix" and topic.startswith(res["name"])):
                writers.add(user["metadata"]["name"])
    return writers


def test_acls_restrict_who_writes_limits_control_and_changelogs() -> None:
    for short in PROTECTED:
        assert _writers(DEFAULT_PREFIX + short) == {"streamrisk-risk-admin"}, short
    for worker in WORKER_INPUTS:
        assert _writers(f"{DEFAULT_PREFIX}{worker}.changelog") == {f"streamrisk-{worker}"}
    # The inputs are written by the producers (and the order worker's kill-switch MassCancel).
    assert _writers(DEFAULT_PREFIX + "market") == {"streamrisk-producer"}
    assert "streamrisk-subscriber" not in set().union(
        *(_writers(s.full_name()) for s in all_specs()))


def test_acls_are_least_privilege_and_name_catalogue_topics() -> None:
    catalogue = {s.full_name(DEFAULT_PREFIX) for s in all_specs()}
    users = _of_kind("KafkaUser")
    assert {u["metadata"]["name"] for u in users} >= {
        "streamrisk-market-worker", "streamrisk-order-worker", "streamrisk-risk-admin",
        "streamrisk-producer", "streamrisk-subscriber"}
    for user in users:
        assert user["spec"]["authentication"]["type"] == "scram-sha-512"
        for acl in user["spec"]["authorization"]["acls"]:
            assert "All" not in acl["operations"], user["metadata"]["name"]
            res = acl["resource"]
            if res["type"] == "topic":
                assert res["patternType"] == "literal" and res["name"] in catalogue, res
            if res["type"] == "group":
                # A broad prefix would let one identity join another's consumer group.
                assert res["name"] != "streamrisk-" and len(res["name"]) > len("streamrisk-")


def _deployments() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _of_kind("Deployment")}


def test_worker_deployments_run_both_workers_with_their_own_identity() -> None:
    deployments = _deployments()
    users = {u["metadata"]["name"]: u for u in _of_kind("KafkaUser")}
    for name, kind, source in (("market-worker", "market", "market"),
                               ("order-worker", "orders", "orders"),
                               ("scope-worker", "scopes", "risk.scope-accounts")):
        (container,) = _containers(deployments[name])
        args = container["args"]
        assert args[:2] == ["worker", kind]
        group = _flag(args, "--group")
        assert group == f"streamrisk-{name}"
        env = {e["name"]: e for e in container["env"]}
        username = env["STREAMRISK_SECURITY__SASL_USERNAME"]["value"]
        assert username in users
        acls = users[username]["spec"]["authorization"]["acls"]
        assert any(a["resource"]["type"] == "group" and group.startswith(a["resource"]["name"])
                   for a in acls)
        assert any(a["resource"].get("name") == DEFAULT_PREFIX + source
                   and "Read" in a["operations"] for a in acls)
        assert env["STREAMRISK_SECURITY__SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": username, "key": "password"}
        assert "secretKeyRef" in env["STREAMRISK_SNAPSHOT_KEY"]["valueFrom"]
        port = int(_flag(args, "--metrics-port") or 0)
        assert {p["containerPort"] for p in container["ports"]} == {port}
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert deployments[name]["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]


def test_no_literal_secret_in_any_workload_environment() -> None:
    for deployment in _deployments().values():
        for container in _containers(deployment):
            for env in container.get("env", []):
                if SECRETISH.search(env["name"]):
                    assert "value" not in env, f"{env['name']} is written literally"
                    assert "secretKeyRef" in env["valueFrom"], env["name"]
            assert not any(SECRETISH.search(a) for a in container.get("args", []))


def _settings_from_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    import os

    for name in list(os.environ):
        if name.startswith("STREAMRISK_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(None)


def test_workload_environments_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for deployment in _deployments().values():
        for container in _containers(deployment):
            env = {e["name"]: e.get("value", "from-a-secret") for e in container["env"]}
            settings = _settings_from_env(env, monkeypatch)
            assert settings.profile == "production"
            assert settings.security.security_protocol == "SASL_SSL"
            assert settings.bootstrap_servers.startswith("streamrisk-kafka-bootstrap.")
            assert settings.topic_prefix == DEFAULT_PREFIX


def test_autoscaling_follows_each_workers_consumer_lag() -> None:
    deployments = _deployments()
    auths = {a["metadata"]["name"]: a for a in _of_kind("TriggerAuthentication")}
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in _of_kind("ScaledObject")}
    assert set(scaled) == {"market-worker", "order-worker"}
    for name, obj in scaled.items():
        (container,) = _containers(deployments[name])
        (trigger,) = obj["spec"]["triggers"]
        assert trigger["type"] == "kafka"
        meta = trigger["metadata"]
        source = by_name(WORKER_INPUTS[name])
        assert meta["consumerGroup"] == _flag(container["args"], "--group")
        assert meta["topic"] == source.full_name(DEFAULT_PREFIX)
        assert int(meta["lagThreshold"]) > 0
        assert 1 <= obj["spec"]["minReplicaCount"] <= obj["spec"]["maxReplicaCount"]
        assert obj["spec"]["maxReplicaCount"] <= source.partitions
        env_names = {e["name"] for e in container["env"]}
        auth = auths[trigger["authenticationRef"]["name"]]
        for ref in auth["spec"]["env"]:
            assert ref["containerName"] == container["name"] and ref["name"] in env_names


# --- compose -------------------------------------------------------------------------------

STREAMRISK_SERVICES = ("topics", "market-worker", "order-worker", "scope-worker", "simulator",
                       "dashboard")
WORKER_KINDS = {"market-worker": "market", "order-worker": "orders", "scope-worker": "scopes"}


def test_compose_has_every_service_wired_in_order() -> None:
    services = _compose()["services"]
    assert set(services) == {"kafka", *STREAMRISK_SERVICES, "prometheus", "grafana"}
    assert "zookeeper" not in services
    assert services["topics"]["command"] == ["topics", "create"]
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name, kind in WORKER_KINDS.items():
        svc = services[name]
        assert svc["deploy"]["replicas"] == (1 if name == "scope-worker" else 2)
        assert svc["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert svc["command"][:2] == ["worker", kind]
        assert svc["secrets"] == ["snapshot_key"]
        assert svc["environment"]["STREAMRISK_SNAPSHOT_KEY_FILE"] == "/run/secrets/snapshot_key"
        assert _flag(svc["command"], "--group") == f"streamrisk-{name}"
    assert services["simulator"]["command"][0] == "simulate"
    assert "--rate" in services["simulator"]["command"]
    assert services["simulator"]["depends_on"]["market-worker"]["condition"] == "service_healthy"
    assert services["dashboard"]["command"][0] == "dashboard"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    for name in ("kafka", *WORKER_KINDS, "dashboard", "prometheus", "grafana"):
        assert services[name]["healthcheck"]["test"], name


def test_compose_images_kafka_kraft_and_bootstrap() -> None:
    services = _compose()["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    images = {services[name]["image"] for name in STREAMRISK_SERVICES}
    assert len(images) == 1 and images.pop().startswith("streamrisk:")
    for name in STREAMRISK_SERVICES:
        svc = services[name]
        assert svc["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert svc["environment"]["STREAMRISK_BOOTSTRAP_SERVERS"] == advertised["INTERNAL"]
        assert svc["depends_on"], name


def test_compose_environments_are_valid_settings_without_literal_secrets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    compose = _compose()
    for name in STREAMRISK_SERVICES:
        svc = compose["services"][name]
        env = {k: str(v) for k, v in svc["environment"].items()}
        assert not any(SECRETISH.search(k) for k in env), f"{name} has a literal secret"
        assert not any(SECRETISH.search(str(a)) for a in svc["command"])
        settings = _settings_from_env(env, monkeypatch)
        assert settings.profile == "production"
        if "STREAMRISK_SNAPSHOT_KEY_FILE" in env:
            secret = Path(env["STREAMRISK_SNAPSHOT_KEY_FILE"]).name
            assert secret in svc["secrets"] and secret in compose["secrets"]
    for svc in compose["services"].values():
        for secret in svc.get("secrets", []):
            assert secret in compose["secrets"]


def test_compose_publishes_ports_on_loopback_only_and_mounts_existing_files() -> None:
    for name, svc in _compose()["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} publicly"
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"


def test_compose_commands_parse_with_the_cli() -> None:
    from consumers.cli.app import build_parser

    parser, commands = build_parser()
    compose = _compose()
    checked = 0
    for name in STREAMRISK_SERVICES:
        command = compose["services"][name]["command"]
        if command[0] not in commands:
            continue  # that command is still being built; the structure tests above hold
        parser.parse_args(command)
        checked += 1
    for deployment in _deployments().values():
        for container in _containers(deployment):
            if container["args"][0] in commands:
                parser.parse_args(container["args"])
                checked += 1
    if not checked:
        pytest.skip("none of worker/topics/simulate/dashboard is registered in the CLI yet")


def test_dockerfile_installs_the_project_as_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", text, re.M)
    assert re.search(r"^RUN pip install \.", text, re.M)
    assert re.search(r"^USER 10001$", text, re.M)
    assert 'ENTRYPOINT ["streamrisk"]' in text
    root = DEPLOY.parent
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        for source in shlex.split(line)[:-1]:
            assert (root / source).exists(), f"Dockerfile copies missing {source}"


# --- Prometheus and Grafana ----------------------------------------------------------------

def test_prometheus_scrapes_every_worker_replica_on_its_metrics_port() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    services = _compose()["services"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for worker in WORKER_KINDS:
        port = int(_flag(services[worker]["command"], "--metrics-port") or 0)
        (sd,) = jobs[worker]["dns_sd_configs"]
        assert sd["names"] == [worker] and sd["port"] == port and sd["type"] == "A"
    rule_files = config["rule_files"]
    mounted = {v.split(":")[1] for v in services["prometheus"]["volumes"]}
    assert set(rule_files) <= mounted


def test_prometheus_rules_use_documented_metrics() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    documented = _documented_metrics()
    used: set[str] = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["alert"] and rule["expr"]
            used |= _metrics_in(rule["expr"])
    assert used and used <= documented, used - documented


def test_grafana_dashboard_queries_documented_metrics_of_every_concern() -> None:
    documented = _documented_metrics()
    assert len(documented) >= 10
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "streamrisk.json").read_text())
    datasource = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    uid = datasource["datasources"][0]["uid"]
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    used: set[str] = set()
    for panel in dash["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == uid
            used |= _metrics_in(target["expr"])
    assert used <= documented, f"undocumented metrics: {used - documented}"
    for concern in ("streamrisk_events_in_total", "streamrisk_consumer_lag",
                    "streamrisk_processing_latency_seconds", "streamrisk_alerts_total",
                    "streamrisk_dead_letters_total", "streamrisk_checkpoint_duration_seconds",
                    "streamrisk_restore_duration_seconds", "streamrisk_model_health_zone"):
        assert concern in used, concern
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/streamrisk.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    grafana = _compose()["services"]["grafana"]
    assert f"./grafana/dashboards:{path}:ro" in grafana["volumes"]
