#!/usr/bin/env bash
# Smoke test of the real binary through grpcurl 1.8 (reflection v1alpha), running the README's examples:
# list services, health, every account RPC, bad input, and a restart that keeps the data.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../deploy/local/env.sh"
cd "$TABLECRYPT_ROOT"
ensure_python_tools

SQLX_OFFLINE=true cargo build --quiet --bin tablecrypt-server
BIN="$CARGO_TARGET_DIR/debug/tablecrypt-server"
DB="tablecrypt_smoke_$$"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
ADDR="127.0.0.1:$PORT"
LOG="$(mktemp)"
SERVER_PID=""

psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE $DB"
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
  rm -f "$LOG"
}
trap cleanup EXIT

start_server() {
  DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" TABLECRYPT_LISTEN_ADDR="$ADDR" \
    TABLECRYPT_METRICS_ADDR=off TABLECRYPT_LOG_FORMAT=json "$BIN" serve --insecure >>"$LOG" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    grpcurl -plaintext "$ADDR" list >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$LOG" >&2
  echo "server did not start" >&2
  return 1
}

stop_server() {
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID"
  SERVER_PID=""
}

fail() { echo "FAIL: $*" >&2; exit 1; }
passed=0
ok() { passed=$((passed + 1)); echo "ok - $*"; }

start_server
services="$(grpcurl -plaintext "$ADDR" list)"
for s in tablecrypt.v1.TableEncryption grpc.health.v1.Health grpc.reflection.v1alpha.ServerReflection; do
  grep -qx "$s" <<<"$services" || fail "grpcurl list lacks $s: $services"
done
ok "grpcurl list shows the API, health and reflection"

health="$(grpcurl -plaintext -d '{"service":"tablecrypt.v1.TableEncryption"}' "$ADDR" grpc.health.v1.Health/Check)"
grep -q '"SERVING"' <<<"$health" || fail "health: $health"
ok "health check SERVING"

grpcurl -plaintext -d '{"account": {"account_id": "123456789012", "display_name": "Payments prod",
  "role_arn": "arn:aws:iam::123456789012:role/tablecrypt-member", "external_id": "tc-ext-1",
  "regions": ["eu-west-1", "us-east-1"], "labels": {"team": "payments", "env": "prod"}}}' \
  "$ADDR" tablecrypt.v1.TableEncryption/RegisterAccount >/dev/null
ok "RegisterAccount"

got="$(grpcurl -plaintext -d '{"account_id": "123456789012"}' "$ADDR" tablecrypt.v1.TableEncryption/GetAccount)"
grep -q '"externalIdSet": true' <<<"$got" || fail "GetAccount: $got"
grep -q 'tc-ext-1' <<<"$got" && fail "GetAccount returned the external id"
ok "GetAccount (external id not returned)"

etag="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["etag"])' <<<"$got")"
updated="$(grpcurl -plaintext -d "{\"account\": {\"account_id\": \"123456789012\", \"display_name\": \"Payments (prod)\",
  \"etag\": \"$etag\"}, \"update_mask\": {\"paths\": [\"display_name\"]}}" \
  "$ADDR" tablecrypt.v1.TableEncryption/UpdateAccount)"
grep -q '"displayName": "Payments (prod)"' <<<"$updated" || fail "UpdateAccount: $updated"
ok "UpdateAccount with field mask and etag"

if out="$(grpcurl -plaintext -d '{"account": {"account_id": "12345678901", "role_arn": "arn:aws:iam::12345678901:role/x",
  "regions": ["eu-west-1"]}}' "$ADDR" tablecrypt.v1.TableEncryption/RegisterAccount 2>&1)"; then
  fail "an 11-digit account id was accepted"
fi
grep -q 'InvalidArgument' <<<"$out" && grep -q 'account.account_id' <<<"$out" || fail "bad id: $out"
ok "11-digit account id refused with INVALID_ARGUMENT naming account.account_id"

stop_server
grep -q 'NOT_SERVING' "$LOG" || fail "no NOT_SERVING on shutdown: $(cat "$LOG")"
start_server
listed="$(grpcurl -plaintext -d '{"label_selector": "team=payments"}' "$ADDR" tablecrypt.v1.TableEncryption/ListAccounts)"
grep -q '"accountId": "123456789012"' <<<"$listed" || fail "ListAccounts after restart: $listed"
ok "ListAccounts after a restart"

grpcurl -plaintext -d '{"account_id": "123456789012"}' "$ADDR" tablecrypt.v1.TableEncryption/DeregisterAccount >/dev/null
listed="$(grpcurl -plaintext -d '{}' "$ADDR" tablecrypt.v1.TableEncryption/ListAccounts)"
grep -q '123456789012' <<<"$listed" && fail "still listed after DeregisterAccount: $listed"
ok "DeregisterAccount"

stop_server
echo "grpcurl smoke test: all $passed checks ok"
