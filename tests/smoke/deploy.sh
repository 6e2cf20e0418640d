#!/usr/bin/env bash
# Checks deploy/ without Docker or a cluster: cfn-lint on the CloudFormation templates, every Kubernetes manifest
# against the Kubernetes JSON schemas (kubernetes-validate, strict: unknown fields fail), the Compose file
# against the Compose specification's schema, the IAM policies as JSON with the statements we rely on, and the
# Dockerfile with hadolint plus its build targets and non-root users. (No Docker engine here: the image itself is
# not built in CI.)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../deploy/local/env.sh"
cd "$TABLECRYPT_ROOT"
ensure_python_tools

fail() { echo "deploy check failed: $*" >&2; exit 1; }

cfn-lint deploy/iam/*.yaml deploy/kms/*.yaml
echo "deploy: cfn-lint passed on $(ls deploy/iam/*.yaml deploy/kms/*.yaml | wc -l) template(s)"

K8S_VERSION=1.33.0
for manifest in deploy/kubernetes/*.yaml; do
  kubernetes-validate --strict --kubernetes-version "$K8S_VERSION" "$manifest" \
    || fail "$manifest is not a valid Kubernetes $K8S_VERSION manifest"
done
kinds="$(grep -h '^kind:' deploy/kubernetes/*.yaml | sort | tr '\n' ' ')"
for kind in ConfigMap Deployment NetworkPolicy PodDisruptionBudget Service ServiceAccount; do
  echo "$kinds" | grep -q "kind: $kind" || fail "no $kind in deploy/kubernetes"
done
grep -q 'grpc:' deploy/kubernetes/deployment.yaml || fail "the Deployment has no gRPC probes"
grep -q 'eks.amazonaws.com/role-arn' deploy/kubernetes/serviceaccount.yaml || fail "no IRSA annotation"
echo "deploy: $(ls deploy/kubernetes/*.yaml | wc -l) manifests valid for Kubernetes $K8S_VERSION ($kinds)"

check-jsonschema --builtin-schema vendor.compose-spec deploy/docker-compose.yml

python3 - <<'PY'
import json, sys
hub = json.load(open("deploy/iam/hub-role-policy.json"))
actions = {s["Action"] for s in hub["Statement"]}
assert actions == {"sts:AssumeRole"}, f"the hub role may only assume roles, not {actions}"
trust = json.load(open("deploy/iam/hub-role-trust-policy.json"))
assert trust["Statement"][0]["Action"] == "sts:AssumeRoleWithWebIdentity"
rds = json.load(open("deploy/iam/hub-role-rds-connect-policy.json"))
assert [s["Action"] for s in rds["Statement"]] == ["rds-db:connect"], rds
assert all(":dbuser:" in s["Resource"] for s in rds["Statement"]), "rds-db:connect on one database user only"
sns = json.load(open("deploy/iam/hub-role-sns-publish-policy.json"))
assert [s["Action"] for s in sns["Statement"]] == ["sns:Publish"], sns
assert all(":sns:" in s["Resource"] and "*" not in s["Resource"] for s in sns["Statement"]), "publish to named topics only"
print("deploy: IAM policies parse; the hub role can only sts:AssumeRole (and rds-db:connect as its database user, "
      "sns:Publish to named topics)")
PY

hadolint deploy/Dockerfile
echo "deploy: hadolint passed on deploy/Dockerfile"

# Every binary the Dockerfile copies is one the workspace builds; every final stage runs as non-root.
for bin in $(grep -o 'target/release/[a-z-]*' deploy/Dockerfile | sort -u | sed 's|target/release/||'); do
  grep -rqs "name = \"$bin\"" services/*/Cargo.toml || fail "the Dockerfile copies $bin, which no crate builds"
done
stages="$(grep -c '^FROM .* AS ' deploy/Dockerfile)"
users="$(grep -c '^USER 65532' deploy/Dockerfile)"
[ "$users" -eq $((stages - 1)) ] || fail "$((stages - 1)) final stages but $users non-root USER lines"
grep -q 'SQLX_OFFLINE=true' deploy/Dockerfile || fail "the Dockerfile does not build with SQLX_OFFLINE"
echo "deploy: Dockerfile builds $(grep -o 'target/release/[a-z-]*' deploy/Dockerfile | sort -u | wc -l) workspace binaries, final stages non-root"
