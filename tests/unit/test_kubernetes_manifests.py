"""deploy/kubernetes/, checked offline: the Kubernetes API schemas (kubernetes-validate, which
ships them), yamllint, and what no schema knows: every variable the manifests name is a
setting, secrets come from the Secret as files, and the workloads agree with the settings
they are given (port, repository folder, shutdown grace, verbs)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from backupd.cli import build_parser
from backupd.redact import is_secret_name
from backupd.settings import FALLBACKS, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
BIN = Path(sys.executable).parent
# The oldest Kubernetes docs/kubernetes.md supports, and the newest kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
SECRETS_MOUNT = "/run/secrets/backupd"

# Lines of a manifest that are settings to uncomment: "# NAME: value" in a ConfigMap,
# "# - name: NAME" in an env list.
COMMENTED_KEY = re.compile(r"^\s*#\s+(?:- name: )?([A-Z][A-Z0-9_]+)(?::\s+\S.*)?$", re.MULTILINE)
# Any variable-like word, in a comment or not: DB_HOST, SHUTDOWN_GRACE, HTTP_AUTH_TOKEN_FILE.
VARIABLE_WORD = re.compile(r"(?<![A-Za-z0-9_<>*])[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+(?![A-Za-z0-9_>])")


def manifests() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml")


def documents() -> list[tuple[Path, dict]]:
    return [(path, doc) for path in manifests() for doc in yaml.safe_load_all(path.read_text()) if doc]


def known_variables() -> set[str]:
    """What load_settings reads: each field's name, its fallbacks, and the _FILE form of both."""
    names = {field.upper() for field in Settings.model_fields}
    names |= {name for fallbacks in FALLBACKS.values() for name in fallbacks}
    return names | {f"{name}_FILE" for name in names}


def pod_specs(node: object) -> list[dict]:
    """Every pod spec in a document, wherever the kind keeps it (StatefulSet, CronJob, ...)."""
    if isinstance(node, dict):
        found = [node] if "containers" in node else []
        return found + [spec for value in node.values() for spec in pod_specs(value)]
    if isinstance(node, list):
        return [spec for value in node for spec in pod_specs(value)]
    return []


def containers(spec: dict) -> list[dict]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def config_maps(docs: list[tuple[Path, dict]]) -> dict[str, dict[str, str]]:
    return {doc["metadata"]["name"]: doc.get("data", {}) for _, doc in docs if doc["kind"] == "ConfigMap"}


def secret_keys(docs: list[tuple[Path, dict]]) -> dict[str, set[str]]:
    return {doc["metadata"]["name"]: {*doc.get("stringData", {}), *doc.get("data", {})}
            for _, doc in docs if doc["kind"] == "Secret"}


def environment(container: dict, maps: dict[str, dict[str, str]]) -> dict[str, str]:
    """The variables a container gets from its envFrom ConfigMaps and its env, as Kubernetes
    merges them (env wins)."""
    environ: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, f"{container['name']}: envFrom takes ConfigMaps only, never a Secret"
        environ.update(maps[source["configMapRef"]["name"]])
    environ.update({item["name"]: item.get("value", "") for item in container.get("env", [])})
    return environ


def unknown_variables(texts: dict[str, str], docs: list[tuple[Path, dict]]) -> list[str]:
    """Each variable that a container would get, or a commented line would give it, and that
    the settings model does not read: '<where>: <NAME>'."""
    known = known_variables()
    maps = config_maps(docs)
    problems = []
    for path, doc in docs:
        for spec in pod_specs(doc):
            for container in containers(spec):
                problems += [f"{path.name} {container['name']}: {name}"
                             for name in environment(container, maps) if name not in known]
    for where, text in texts.items():
        problems += [f"{where} (commented): {name}" for name in COMMENTED_KEY.findall(text) if name not in known]
    return problems


def backupd_containers() -> list[tuple[Path, dict, dict]]:
    """(file, pod spec, container) for every container running the backupd image."""
    return [(path, spec, container) for path, doc in documents() for spec in pod_specs(doc)
            for container in containers(spec) if container["image"].split(":")[0] == "backupd"]


# The files themselves ------------------------------------------------------------------------
def test_manifests_pass_kubernetes_validate_strict():
    for version in KUBERNETES_VERSIONS:
        result = subprocess.run([BIN / "kubernetes-validate", "--strict", "--quiet", "-k", version, *manifests()],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr


def test_manifests_pass_yamllint():
    result = subprocess.run([BIN / "yamllint", "--strict", "-c", DEPLOY / ".yamllint", DEPLOY],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_manifest_is_applied_as_it_is():
    """kubectl apply -k applies exactly the validated files: every one is a resource of a
    kustomization, every resource exists, and nothing (generators, patches) changes them
    beyond the image name."""
    listed = set()
    for kustomization in DEPLOY.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        assert set(spec) <= {"apiVersion", "kind", "resources", "images"}, kustomization
        for resource in spec["resources"]:
            path = (kustomization.parent / resource).resolve()
            assert path.exists(), f"{kustomization}: {resource} does not exist"
            assert path.is_dir() or path.suffix == ".yaml", resource
            listed.add(path / "kustomization.yaml" if path.is_dir() else path)
    assert set(manifests()) <= listed
    for variant in ("sidecar", "cronjob"):  # what docs/kubernetes.md tells people to apply
        assert (DEPLOY / variant / "kustomization.yaml").exists()


def variant_documents(folder: Path) -> list[dict]:
    """The documents `kubectl apply -k folder` applies (its resources, and theirs)."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    docs = []
    for resource in spec["resources"]:
        path = (folder / resource).resolve()
        docs += variant_documents(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_what_each_variant_refers_to_is_in_it():
    """A name that another file does not define leaves the pod pending, with no error at apply."""
    for variant in ("sidecar", "cronjob"):
        docs = variant_documents(DEPLOY / variant)
        defined = {(doc["kind"], doc["metadata"]["name"]) for doc in docs}
        for doc in docs:
            for spec in pod_specs(doc):
                wanted = {("ConfigMap", s["configMapRef"]["name"]) for c in containers(spec) for s in c["envFrom"]}
                wanted |= {("Secret", v["secret"]["secretName"]) for v in spec["volumes"] if "secret" in v}
                wanted |= {("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"])
                           for v in spec["volumes"] if "persistentVolumeClaim" in v}
                mounted = {m["name"] for c in containers(spec) for m in c["volumeMounts"]}
                volumes = {v["name"] for v in spec["volumes"]}
                volumes |= {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])}
                assert mounted <= volumes, f"{variant}: {mounted - volumes} mounted but not defined"
                assert wanted <= defined, f"{variant}: {wanted - defined} not defined"
            if doc["kind"] == "StatefulSet":
                assert ("Service", doc["spec"]["serviceName"]) in defined


# Variables ----------------------------------------------------------------------------------
def test_manifests_name_only_variables_the_settings_know():
    texts = {path.name: path.read_text() for path in manifests()}
    assert unknown_variables(texts, documents()) == []
    # Comments too: a variable a comment tells the reader about must exist.
    named = {name for text in texts.values() for name in VARIABLE_WORD.findall(text)}
    assert named - known_variables() == set()


def test_the_check_finds_a_variable_the_settings_do_not_know():
    """A typo in each place a manifest can name a variable is found."""
    config_map = {"kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"BACKUP_DIRECTORY": "/b"}}
    pod = {"kind": "Pod", "spec": {"containers": [{
        "name": "backupd", "envFrom": [{"configMapRef": {"name": "cm"}}],
        "env": [{"name": "DB_PASWORD_FILE", "value": "/x"}, {"name": "PGHOST", "value": "db"}]}]}}
    texts = {"configmap.yaml": "data:\n  # BACKUP_SCHEDUEL: \"0 1 * * *\"\n  # prose: BACKUP_DIR is fine\n",
             "statefulset.yaml": "env:\n  # - name: HTTP_TOKEN_FILE\n"}
    problems = unknown_variables(texts, [(Path("configmap.yaml"), config_map), (Path("pod.yaml"), pod)])
    assert sorted(problems) == ["configmap.yaml (commented): BACKUP_SCHEDUEL",
                                "pod.yaml backupd: BACKUP_DIRECTORY", "pod.yaml backupd: DB_PASWORD_FILE",
                                "statefulset.yaml (commented): HTTP_TOKEN_FILE"]


def test_secrets_come_only_from_the_secret_as_files():
    """No secret value in a ConfigMap or an env value (they show in `kubectl describe`); every
    *_FILE names a key of the Secret, mounted where the path says."""
    docs = documents()
    keys = secret_keys(docs)
    commented = [key for p in manifests() for key in COMMENTED_KEY.findall(p.read_text())]
    for data in config_maps(docs).values():
        named = [*data, *commented]
        assert [k for k in named if is_secret_name(k) and not k.endswith("_FILE")] == []
    for path, spec, container in backupd_containers():
        secret_volumes = {v["name"]: v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
        mounts = {m["mountPath"]: secret_volumes[m["name"]] for m in container["volumeMounts"]
                  if m["name"] in secret_volumes}
        for item in container.get("env", []):
            assert "valueFrom" not in item, f"{path.name}: {item['name']} from a secret as a variable; use _FILE"
            assert item["name"].endswith("_FILE") or not is_secret_name(item["name"]), item
            if item["name"].endswith("_FILE"):
                folder, _, key = item["value"].rpartition("/")
                assert folder in mounts and key in keys[mounts[folder]], f"{path.name}: {item} is not mounted"
    # The commented ones, to uncomment, name keys of the Secret as well.
    shown = {key for p in manifests() for key in re.findall(rf"{SECRETS_MOUNT}/([a-z0-9-]+)", p.read_text())}
    assert shown <= set().union(*keys.values())


# The workloads agree with their settings -------------------------------------------------------
def test_each_container_starts_with_the_settings_it_is_given(tmp_path):
    """The ConfigMap and env load without a configuration error (secrets read from files), and
    the pod around them fits: the repository is the volume, the port the one served, the grace
    above SHUTDOWN_GRACE, the arguments a backupd command."""
    docs = documents()
    maps = config_maps(docs)
    for path, spec, container in backupd_containers():
        environ = environment(container, maps)
        for name in [n for n in environ if n.endswith("_FILE")]:
            (tmp_path / name).write_text("placeholder\n")
            environ[name] = str(tmp_path / name)
        settings = load_settings(environ)
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts.get(str(settings.backup_dir)) == "backups", f"{path.name}: BACKUP_DIR is not the volume"
        assert spec["terminationGracePeriodSeconds"] > settings.shutdown_grace
        build_parser().parse_args(container["args"])
        if container["args"] == ["run"]:
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports["http"] == settings.http_port
    service = next(doc for _, doc in docs if doc["kind"] == "Service")
    served = next(doc for _, doc in docs if doc["kind"] == "ConfigMap")["data"]["HTTP_PORT"]
    assert service["metadata"]["annotations"]["prometheus.io/port"] == served
    assert [p["port"] for p in service["spec"]["ports"]] == [int(served)]


def test_pods_run_as_the_images_user_and_nothing_in_the_namespace_sets_variables():
    # Service links would give every pod <SERVICE>_PORT=tcp://...: a Service "db" sets DB_PORT.
    uid = re.search(r"useradd --system --uid (\d+) .* backupd", (ROOT / "Dockerfile.backup").read_text())
    assert uid
    for path, spec, container in backupd_containers():
        assert spec["enableServiceLinks"] is False, path.name
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == int(uid.group(1))
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["resources"]["requests"], path.name


def test_liveness_never_restarts_a_daemon_for_old_or_failed_backups():
    """/healthz is 503 for an old backup: that may make the pod unready, never restart it."""
    (daemon,) = [c for _, _, c in backupd_containers() if c["args"] == ["run"]]
    assert daemon["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert "httpGet" not in daemon["livenessProbe"] and "httpGet" not in daemon.get("startupProbe", {})
    statefulset = next(doc for _, doc in documents() if doc["kind"] == "StatefulSet")
    assert statefulset["spec"]["replicas"] == 1
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"  # an unready pod blocks no update
    service = next(doc for _, doc in documents() if doc["kind"] == "Service")
    assert service["spec"]["publishNotReadyAddresses"] is True  # an unhealthy daemon is still scraped


def test_the_cronjob_backs_up_then_replicates_and_never_overlaps():
    (cronjob,) = [doc for _, doc in documents() if doc["kind"] == "CronJob"]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    (spec,) = pod_specs(cronjob)
    assert [c["args"] for c in containers(spec)] == [["backup"], ["replicate"]]
    for container in containers(spec):
        environ = environment(container, config_maps(documents()))
        settings = load_settings({k: v for k, v in environ.items() if not k.endswith("_FILE")})
        # Health (in the notifications a run sends) reads the schedule, and PITR needs a daemon.
        assert (settings.backup_schedule, settings.backup_timezone) == (cronjob["spec"]["schedule"],
                                                                      cronjob["spec"]["timeZone"])
        assert settings.pitr_enabled is False
