#!/usr/bin/env bash
# The whole test suite, runnable on a fresh machine: starts PostgreSQL, installs grpcurl and buf locally, checks
# formatting, lints (clippy, buf), runs every Rust test, then a grpcurl smoke test of the real binary.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../deploy/local/env.sh"
cd "$TABLECRYPT_ROOT"
# Builds use the committed .sqlx query data, so no database is needed to compile.
export SQLX_OFFLINE=true
# A fresh clone gains nothing from incremental compilation's caches, which are gigabytes on disk.
if [ "${CI:-}" = "true" ]; then export CARGO_INCREMENTAL=0; fi
log "disk: $(df -h "$(dirname "$CARGO_TARGET_DIR")" | awk 'NR==2 {print $4 " free of " $2}'), target dir $CARGO_TARGET_DIR"

ensure_postgres
ensure_python_tools
ensure_buf

log "cargo fmt --check"
cargo fmt --all --check

log "buf lint"
buf lint

log "cargo clippy"
cargo clippy --quiet --workspace --all-targets -- -D warnings

log "one HTTP stack and one TLS implementation (cargo tree)"
bash tests/smoke/one-http-stack.sh

log "grpcurl smoke test"
bash tests/smoke/grpcurl.sh

log "TLS, tokens and client certificates through grpcurl"
bash tests/smoke/tls.sh

log "deploy/: cfn-lint, Kubernetes schemas, the Compose schema, IAM JSON, Dockerfile"
bash tests/smoke/deploy.sh

log "demo: deploy/local/run.sh, then the inventory through grpcurl and a migration through the CLI"
bash tests/smoke/demo.sh

log "fleet emulator with boto3 (pytest)"
cargo build --quiet --bin fleet-emulator
FLEET_EMULATOR_BIN="$CARGO_TARGET_DIR/debug/fleet-emulator" python -m pytest -q services/fleet-emulator/tests/python

log "cargo nextest"
# The crash test (tests/tests/e2e/change_crash.rs) runs the real binary and kills it with SIGKILL.
# The CLI tests (tests/tests/e2e/cli.rs) run the real `tablecrypt` binary.
cargo build --quiet --bin tablecrypt-server --bin tablecrypt
export TC_TEST_SERVER_BIN="$CARGO_TARGET_DIR/debug/tablecrypt-server"
export TC_TEST_CLI_BIN="$CARGO_TARGET_DIR/debug/tablecrypt"
cargo nextest run --workspace --no-fail-fast

log "cargo nextest: the change tests again under the emulator's aws-observed behaviour profile"
# The same engine tests on an emulator reshaped to AWS as observed (the old key shown, ACTIVE, at the start of a
# change; one concern per UpdateTable; ...): tablecrypt must be right under every plausible behaviour.
TC_EMULATOR_PROFILE=aws-observed cargo nextest run --no-fail-fast -p tablecrypt-tests \
    -E 'test(/^(change_requests|change_faults|change_account_limits|change_under_faults|change_crash|change_postgres_restart|cli)::/)'
