#!/usr/bin/env python3
"""Offline checks of deploy/: renders the kustomize base and overlays, validates every object
against the Kubernetes API schemas (kubernetes-validate, strict: unknown fields are errors) and
the ServiceMonitor and PrometheusRule against the prometheus-operator CRD schemas vendored in
tests/deploy/schemas (see SOURCE.md there), then checks what the agent and the alert rules rely
on: ports, probes, args, the audit overlay's --dry-run, the NetworkPolicy that admits only the
Prometheus scraper to the metrics port, the kube-rbac-proxy overlay (agent on 127.0.0.1, the
proxy in front with TLS, TokenReview and SubjectAccessReview), and that the PrometheusRule
carries exactly the groups of dashboards/alerts.yaml.

Run through tests/deploy/validate.sh (it makes the venv). `--write-rule` regenerates
deploy/base/prometheusrule.yaml from dashboards/alerts.yaml.
"""
import argparse
import copy
import json
import os
import pathlib
import subprocess
import sys

import jsonschema
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
ALERTS = ROOT / "dashboards/alerts.yaml"
RULE = ROOT / "deploy/base/prometheusrule.yaml"
SCHEMAS = ROOT / "tests/deploy/schemas"
KUSTOMIZATIONS = {
    "base": ROOT / "deploy/base",
    "audit": ROOT / "deploy/overlays/audit",
    "kube-rbac-proxy": ROOT / "deploy/overlays/kube-rbac-proxy",
    "kube-prometheus-stack": ROOT / "deploy/overlays/kube-prometheus-stack",
    "uninstall": ROOT / "deploy/uninstall",
}
# Every directory here is a kustomize Component, rendered over the base on its own (a
# kustomization made for it under the target dir) and checked by COMPONENT_CHECKS.
COMPONENTS = ROOT / "deploy/components"
DASHBOARD = ROOT / "dashboards/iommu-enforcer.json"
DASHBOARD_COPY = COMPONENTS / "grafana-dashboard/iommu-enforcer.json"
PROXY_PORT = 9443
# Oldest Kubernetes the manifests target (securityContext.appArmorProfile is 1.30+), and the
# newest schemas kubernetes-validate bundles.
K8S_VERSIONS = ["1.30", kubernetes_validate.latest_version()]
CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
}
METRICS_PORT = 9477

RULE_HEADER = """\
# GENERATED from dashboards/alerts.yaml by `tests/deploy/validate.sh --write-rule`: edit that
# file, not this one. tests/deploy/validate.sh fails when the two differ.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: iommu-enforcer
spec:
"""

failures = []
passes = [0]


def fail(msg):
    failures.append(msg)
    print(f"FAIL {msg}")


def ok(msg):
    passes[0] += 1
    print(f"ok   {msg}")


def render(kustomize, path):
    out = subprocess.run(kustomize + [str(path)], check=True, capture_output=True, text=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def strict(schema):
    """A CRD schema as `kubectl apply --validate=strict` reads it: an object with `properties`
    and no `additionalProperties` or x-kubernetes-preserve-unknown-fields takes no other keys."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return schema


def crd_schema(filename, version):
    crd = yaml.safe_load((SCHEMAS / filename).read_text())
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            schema = strict(v["schema"]["openAPIV3Schema"])
            # The CRD schema leaves metadata to the API server; check the part we write.
            schema["properties"]["metadata"] = {"type": "object"}
            return schema
    raise KeyError(f"{filename} has no version {version}")


def validate_object(name, doc):
    key = (doc.get("apiVersion"), doc.get("kind"))
    what = f"{name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    if key in CRDS:
        schema = crd_schema(CRDS[key], key[0].split("/")[1])
        errors = sorted(
            jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path)
        )
        if errors:
            for e in errors:
                fail(f"{what}: {'/'.join(map(str, e.path))}: {e.message}")
        else:
            ok(f"{what} matches the {CRDS[key]} schema (strict)")
        return
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(f"{what} (Kubernetes {version}): {'/'.join(map(str, e.path))}: {e.message}")
            return
        except kubernetes_validate.SchemaNotFoundError:
            fail(f"{what}: no schema for {key} in Kubernetes {version}")
            return
    ok(f"{what} valid for Kubernetes {', '.join(K8S_VERSIONS)} (strict)")


def find(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    if len(found) != 1:
        raise SystemExit(f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


def check_base(docs):
    ds = find(docs, "DaemonSet", "iommu-enforcer")
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    args = c["args"]
    checks = {
        "the agent listens on 0.0.0.0:9477": "--metrics-addr" in args
        and args[args.index("--metrics-addr") + 1] == f"0.0.0.0:{METRICS_PORT}",
        "the policy comes from the ConfigMap mount": "--policy" in args
        and args[args.index("--policy") + 1] == "/etc/iommu-enforcer/policy.toml"
        and any(m["mountPath"] == "/etc/iommu-enforcer" for m in c["volumeMounts"]),
        "procfs is read at /host/proc": "--proc-root" in args
        and args[args.index("--proc-root") + 1] == "/host/proc",
        "the base enforces (no --dry-run)": "--dry-run" not in args,
        "container port 9477 is named metrics": {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}
        in c["ports"],
        "readiness probe is /readyz": c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"},
        "liveness probe is /healthz": c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"},
        "hostPID is on": pod.get("hostPID") is True,
        "not privileged, no CAP_SYS_ADMIN": not c["securityContext"].get("privileged")
        and "SYS_ADMIN" not in c["securityContext"]["capabilities"]["add"]
        and c["securityContext"]["capabilities"]["drop"] == ["ALL"],
        "GPU nodes only": pod["nodeSelector"].get("nvidia.com/gpu.present") == "true",
        "every taint of a GPU node is tolerated (operator Exists, no key, no effect)": {"operator": "Exists"}
        in pod["tolerations"],
        "every mount has a volume": {m["name"] for m in c["volumeMounts"]} <= {v["name"] for v in pod["volumes"]},
    }
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    for path in ["/sys", "/sys/kernel/security", "/sys/fs/bpf", "/sys/kernel/btf", "/host/proc", "/dev/vfio"]:
        checks[f"{path} is mounted"] = path in mounts
    checks["/sys/kernel/btf is read-only"] = mounts.get("/sys/kernel/btf", {}).get("readOnly") is True
    # The container runtimes' state (trusted_containers) is read through a read-only mount.
    args = c["args"]
    state_dirs = (
        args[args.index("--cri-state-dir") + 1].split(",") if "--cri-state-dir" in args else []
    )
    checks["--cri-state-dir names containerd's and CRI-O's state"] = sorted(state_dirs) == [
        "/host/run/containerd/io.containerd.runtime.v2.task/k8s.io",
        "/host/run/containers/storage/overlay-containers",
    ]
    checks["the runtimes' state is mounted read-only"] = bool(state_dirs) and all(
        any(
            (d == p or d.startswith(p.rstrip("/") + "/")) and m.get("readOnly") is True
            for p, m in mounts.items()
        )
        for d in state_dirs
    )
    cm_name = next(v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v)
    checks["the policy ConfigMap exists"] = any(
        d["kind"] == "ConfigMap" and d["metadata"]["name"] == cm_name and "policy.toml" in d["data"] for d in docs
    )
    svc = find(docs, "Service", "iommu-enforcer")
    checks["Service port 9477 is named metrics"] = any(
        p["name"] == "metrics" and p["port"] == METRICS_PORT for p in svc["spec"]["ports"]
    )
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    checks["Service selects the agent pods"] = all(pod_labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    sm = find(docs, "ServiceMonitor", "iommu-enforcer")
    checks["ServiceMonitor selects the Service"] = all(
        svc["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items()
    )
    checks["ServiceMonitor scrapes the metrics port at /metrics"] = [
        (e["port"], e["path"]) for e in sm["spec"]["endpoints"]
    ] == [("metrics", "/metrics")]
    # The alert rules match job="iommu-enforcer": the operator names the job after the Service.
    checks["the scrape job is named iommu-enforcer"] = svc["metadata"]["name"] == "iommu-enforcer"
    checks.update(network_policy_checks(docs, pod_labels, "metrics"))
    ns = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    checks["everything lives in namespace iommu-enforcer"] = ns == {"iommu-enforcer"}
    for what, good in checks.items():
        (ok if good else fail)(f"base: {what}")

    rule = find(docs, "PrometheusRule", "iommu-enforcer")
    alerts = yaml.safe_load(ALERTS.read_text())
    if rule["spec"]["groups"] == alerts["groups"]:
        ok("PrometheusRule groups are identical to dashboards/alerts.yaml")
    else:
        fail("PrometheusRule groups differ from dashboards/alerts.yaml: run tests/deploy/validate.sh --write-rule")


def network_policy_checks(docs, pod_labels, port):
    """The NetworkPolicy admits only the Prometheus scraper, and only to `port`."""
    np = find(docs, "NetworkPolicy", "iommu-enforcer-metrics")
    spec = np["spec"]
    rules = spec.get("ingress", [])
    peers = [peer for rule in rules for peer in rule.get("from", [])]

    def expr(selector, key):
        return [
            e["values"]
            for e in selector.get("matchExpressions", [])
            if e["key"] == key and e["operator"] == "In"
        ]

    return {
        "NetworkPolicy selects the agent pods": all(
            pod_labels.get(k) == v for k, v in spec["podSelector"]["matchLabels"].items()
        ),
        "NetworkPolicy restricts ingress": spec.get("policyTypes") == ["Ingress"],
        "NetworkPolicy has one rule, with sources (no allow-all)": len(rules) == 1 and len(peers) >= 1,
        "NetworkPolicy admits only Prometheus pods of namespace monitoring": all(
            set(peer) == {"namespaceSelector", "podSelector"}
            and expr(peer["namespaceSelector"], "kubernetes.io/metadata.name") == [["monitoring"]]
            and expr(peer["podSelector"], "app.kubernetes.io/name") == [["prometheus"]]
            and "matchLabels" not in peer["podSelector"]
            for peer in peers
        ),
        f"NetworkPolicy admits only port {port}": all(
            r.get("ports") == [{"port": port, "protocol": "TCP"}] for r in rules
        ),
    }


def check_kube_rbac_proxy(docs):
    ds = find(docs, "DaemonSet", "iommu-enforcer")
    pod = ds["spec"]["template"]["spec"]
    agent, proxy = pod["containers"][0], pod["containers"][-1]
    args = agent["args"]
    pargs = dict(a.split("=", 1) for a in proxy["args"])
    probes = [agent["readinessProbe"]["httpGet"], agent["livenessProbe"]["httpGet"]]
    token_mounts = [
        c["name"]
        for c in pod["containers"]
        for m in c.get("volumeMounts", [])
        if m["name"] == "kube-rbac-proxy-token"
    ]
    svc = find(docs, "Service", "iommu-enforcer")
    sm = find(docs, "ServiceMonitor", "iommu-enforcer")
    (ep,) = sm["spec"]["endpoints"]
    role = find(docs, "ClusterRole", "iommu-enforcer-kube-rbac-proxy")
    grants = {(r["apiGroups"][0], res, v) for r in role["rules"] for res in r["resources"] for v in r["verbs"]}
    binding = find(docs, "ClusterRoleBinding", "iommu-enforcer-kube-rbac-proxy")
    checks = {
        "the agent listens on 127.0.0.1:9477 only": args[args.index("--metrics-addr") + 1]
        == f"127.0.0.1:{METRICS_PORT}",
        "the agent container exposes no port": not agent.get("ports"),
        "two containers, the proxy last": len(pod["containers"]) == 2 and proxy["name"] == "kube-rbac-proxy",
        "the proxy forwards to the agent on loopback": pargs.get("--upstream") == f"http://127.0.0.1:{METRICS_PORT}/",
        "the proxy serves TLS on the https port": pargs.get("--secure-listen-address") == f"0.0.0.0:{PROXY_PORT}"
        and {"name": "https", "containerPort": PROXY_PORT, "protocol": "TCP"} in proxy["ports"],
        "the probes go through the proxy over HTTPS, unauthenticated": all(
            p["port"] == "https" and p["scheme"] == "HTTPS" for p in probes
        )
        and set(pargs.get("--ignore-paths", "").split(",")) == {"/healthz", "/readyz"},
        "the pod mounts no token by default": pod.get("automountServiceAccountToken") is False,
        "only the proxy has a service-account token": token_mounts == ["kube-rbac-proxy"],
        "the proxy runs unprivileged": proxy["securityContext"].get("allowPrivilegeEscalation") is False
        and proxy["securityContext"]["capabilities"]["drop"] == ["ALL"],
        "Service port 9443 is named https": [(p["name"], p["port"]) for p in svc["spec"]["ports"]]
        == [("https", PROXY_PORT)],
        "ServiceMonitor scrapes https with a bearer token": ep["port"] == "https"
        and ep["scheme"] == "https"
        and ep.get("bearerTokenFile", "").endswith("/token"),
        "the proxy may create TokenReviews and SubjectAccessReviews": grants
        == {
            ("authentication.k8s.io", "tokenreviews", "create"),
            ("authorization.k8s.io", "subjectaccessreviews", "create"),
        },
        "the ClusterRole is bound to the agent's service account": binding["subjects"]
        == [{"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": "iommu-enforcer"}],
    }
    checks.update(network_policy_checks(docs, ds["spec"]["template"]["metadata"]["labels"], "https"))
    for what, good in checks.items():
        (ok if good else fail)(f"kube-rbac-proxy overlay: {what}")


def check_audit(base, audit):
    args = find(audit, "DaemonSet", "iommu-enforcer")["spec"]["template"]["spec"]["containers"][0]["args"]
    (ok if args.count("--dry-run") == 1 else fail)("audit overlay: the agent runs with --dry-run")
    # The overlay changes the agent's args and nothing else that matters.
    strip = lambda docs: [
        d if d["kind"] != "DaemonSet" else {**d, "spec": {**d["spec"], "template": None}} for d in docs
    ]
    (ok if strip(base) == strip(audit) else fail)("audit overlay: every other object equals the base's")


def component_kustomization(name):
    """A kustomization under the target dir that renders the base with component `name`."""
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    d = target / "deploy-components" / name
    d.mkdir(parents=True, exist_ok=True)
    rel = lambda p: os.path.relpath(p, d)
    (d / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"resources:\n  - {rel(ROOT / 'deploy/base')}\n"
        f"components:\n  - {rel(COMPONENTS / name)}\n"
    )
    return d


def without(docs, kind, name=None):
    return [d for d in docs if not (d["kind"] == kind and (name is None or d["metadata"]["name"] == name))]


def agent_pod(docs):
    return find(docs, "DaemonSet", "iommu-enforcer")["spec"]["template"]["spec"]


def same_selector(base, docs):
    """The DaemonSet's selector and pod labels are the base's (a selector is immutable)."""
    b, d = (find(x, "DaemonSet", "iommu-enforcer")["spec"] for x in (base, docs))
    return b["selector"] == d["selector"] and b["template"]["metadata"]["labels"] == d["template"]["metadata"]["labels"]


def release_labelled(docs):
    return all(
        find(docs, k, "iommu-enforcer")["metadata"]["labels"].get("release") == "kube-prometheus-stack"
        for k in ["ServiceMonitor", "PrometheusRule"]
    )


def dashboard_configmap(docs):
    cm = find(docs, "ConfigMap", "iommu-enforcer-dashboard")
    return (
        cm["metadata"]["labels"].get("grafana_dashboard") == "1"
        and cm["metadata"].get("namespace") == "iommu-enforcer"
        and json.loads(cm["data"]["iommu-enforcer.json"]) == json.loads(DASHBOARD.read_text())
    )


def check_release_label(base, docs):
    return {
        "ServiceMonitor and PrometheusRule carry release: kube-prometheus-stack": release_labelled(docs),
        "the DaemonSet's selector and pod labels are untouched": same_selector(base, docs),
    }


def check_nfd_node_selector(base, docs):
    sel = agent_pod(docs)["nodeSelector"]
    return {
        "nodes are chosen by NFD's NVIDIA display-controller label": sel.get("feature.node.kubernetes.io/pci-0300_10de.present") == "true",
        "the GPU Operator's label is no longer required": "nvidia.com/gpu.present" not in sel,
        "only the DaemonSet changes": without(base, "DaemonSet") == without(docs, "DaemonSet"),
    }


def check_log_json(base, docs):
    args = agent_pod(docs)["containers"][0]["args"]
    return {
        "the agent logs JSON": args[-2:] == ["--log-format", "json"] and args.count("--log-format") == 1,
        "the other args are the base's": args[:-2] == agent_pod(base)["containers"][0]["args"],
        "only the DaemonSet changes": without(base, "DaemonSet") == without(docs, "DaemonSet"),
    }


def check_no_networkpolicy(base, docs):
    return {
        "no NetworkPolicy": not [d for d in docs if d["kind"] == "NetworkPolicy"],
        "everything else is the base's": without(base, "NetworkPolicy") == docs,
    }


def check_grafana_dashboard(base, docs):
    return {
        "the dashboard is a ConfigMap labelled grafana_dashboard: \"1\", equal to dashboards/iommu-enforcer.json": dashboard_configmap(docs),
        "everything else is the base's": without(docs, "ConfigMap", "iommu-enforcer-dashboard") == base,
    }


COMPONENT_CHECKS = {
    "release-label": check_release_label,
    "nfd-node-selector": check_nfd_node_selector,
    "log-json": check_log_json,
    "no-networkpolicy": check_no_networkpolicy,
    "grafana-dashboard": check_grafana_dashboard,
}


def check_kube_prometheus_stack(base, docs):
    args = agent_pod(docs)["containers"][0]["args"]
    checks = {
        "audit mode (--dry-run)": args.count("--dry-run") == 1,
        "JSON logs": "--log-format" in args and args[args.index("--log-format") + 1] == "json",
        "release label on the ServiceMonitor and PrometheusRule": release_labelled(docs),
        "the dashboard ConfigMap for the Grafana sidecar": dashboard_configmap(docs),
        "the DaemonSet's selector and pod labels are the base's": same_selector(base, docs),
    }
    for what, good in checks.items():
        (ok if good else fail)(f"kube-prometheus-stack overlay: {what}")


def check_uninstall(docs):
    ds = find(docs, "DaemonSet", "iommu-enforcer-uninstall")
    pod = ds["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (main,) = pod["containers"]
    args = init["args"]
    mounts = {m["mountPath"] for m in init["volumeMounts"]}
    sc = init["securityContext"]
    checks = {
        "the init container runs enforcer detach --force --if-present": args[0] == "detach"
        and {"--force", "--if-present"} <= set(args),
        "it removes the default pin root": args[args.index("--pin-root") + 1] == "/sys/fs/bpf/iommu-enforcer",
        "it clears the NFD label file": args[args.index("--nfd-features-dir") + 1]
        == "/etc/kubernetes/node-feature-discovery/features.d"
        and "/etc/kubernetes/node-feature-discovery/features.d" in mounts,
        "bpffs is mounted": "/sys/fs/bpf" in mounts,
        "the agent's image": init["image"].startswith("localhost/iommu-enforcer:"),
        "host PID namespace (the pins' guard knows the detacher by its host PID)": pod.get("hostPID") is True,
        "only CAP_BPF, not privileged": sc["capabilities"] == {"drop": ["ALL"], "add": ["BPF"]}
        and not sc.get("privileged"),
        "then it idles (pause)": main["image"].startswith("registry.k8s.io/pause:"),
        "every taint is tolerated": {"operator": "Exists"} in pod["tolerations"],
        "its own namespace": {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
        == {"iommu-enforcer-uninstall"},
    }
    for what, good in checks.items():
        (ok if good else fail)(f"uninstall: {what}")


def write_rule():
    body = ALERTS.read_text()
    lines = [line for line in body.splitlines() if not line.startswith("#")]
    RULE.write_text(RULE_HEADER + "".join(f"  {line}\n" if line else "\n" for line in lines))
    print(f"wrote {RULE.relative_to(ROOT)}")
    DASHBOARD_COPY.write_text(DASHBOARD.read_text())
    print(f"wrote {DASHBOARD_COPY.relative_to(ROOT)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kustomize", default="kubectl kustomize", help="command that renders a kustomization")
    parser.add_argument("--write-rule", action="store_true", help="regenerate the PrometheusRule and exit")
    args = parser.parse_args()
    if args.write_rule:
        write_rule()
        return 0
    kustomize = args.kustomize.split()
    rendered = {}
    for name, path in KUSTOMIZATIONS.items():
        rendered[name] = render(kustomize, path)
        ok(f"{name}: {' '.join(kustomize)} {path.relative_to(ROOT)} rendered {len(rendered[name])} objects")
        for doc in rendered[name]:
            validate_object(name, doc)
    check_base(rendered["base"])
    check_audit(rendered["base"], rendered["audit"])
    check_kube_rbac_proxy(rendered["kube-rbac-proxy"])
    check_kube_prometheus_stack(rendered["base"], rendered["kube-prometheus-stack"])
    check_uninstall(rendered["uninstall"])
    (ok if DASHBOARD_COPY.read_text() == DASHBOARD.read_text() else fail)(
        "components/grafana-dashboard/iommu-enforcer.json equals dashboards/iommu-enforcer.json"
        " (tests/deploy/validate.sh --write-rule copies it)"
    )
    for comp in sorted(p.name for p in COMPONENTS.iterdir() if p.is_dir()):
        check = COMPONENT_CHECKS.get(comp)
        if check is None:
            fail(f"component {comp} has no check in tests/deploy/validate_manifests.py")
            continue
        docs = render(kustomize, component_kustomization(comp))
        ok(f"component {comp}: rendered over the base, {len(docs)} objects")
        for doc in docs:
            validate_object(f"component {comp}", doc)
        for what, good in check(rendered["base"], docs).items():
            (ok if good else fail)(f"component {comp}: {what}")
    print(f"deploy: {passes[0]} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
