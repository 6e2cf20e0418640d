#!/usr/bin/env bash
# The README's run command, checked: deploy/local/run.sh on free ports and a fresh database must start the fleet
# emulator and the server, register the demo accounts and scan once, so ListTableEncryptions answers with tables
# at once, every filter works through grpcurl, and the broken sandbox account shows up as its own failure. Then
# the README's batch key migration from key A to key B: plan, create, watch, history and rollback.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../deploy/local/env.sh"
cd "$TABLECRYPT_ROOT"
ensure_python_tools

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
DB="tablecrypt_demo_$$"
ADDR="127.0.0.1:$(free_port)"
LOG="$(mktemp)"
psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE $DB"
DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" TABLECRYPT_LISTEN_ADDR="$ADDR" TABLECRYPT_METRICS_ADDR=off \
  FLEET_EMULATOR_LISTEN="127.0.0.1:$(free_port)" TABLECRYPT_LOG_FORMAT=json \
  setsid bash deploy/local/run.sh >"$LOG" 2>&1 &
DEMO_PID=$!
cleanup() {
  kill -TERM -- "-$DEMO_PID" 2>/dev/null || true
  wait "$DEMO_PID" 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
  rm -f "$LOG"
}
trap cleanup EXIT

fail() { echo "demo check failed: $*" >&2; tail -n 40 "$LOG" >&2; exit 1; }
call() { grpcurl -plaintext -d "$2" "$ADDR" "tablecrypt.v1.TableEncryption/$1"; }
count_tables() { call ListTableEncryptions "$1" | grep -c '"tableName"' || true; }

for _ in $(seq 1 600); do grep -q 'ready: try' "$LOG" && break; sleep 0.5; done
grep -q 'ready: try' "$LOG" || fail "run.sh never said ready"

# The scan run.sh started: wait for it to finish; the sandbox account (AssumeRole denied) fails on its own.
scan_id="$(grep -o '"scanId": "[^"]*"' "$LOG" | head -n 1 | cut -d'"' -f4)"
[ -n "$scan_id" ] || fail "run.sh started no scan"
for _ in $(seq 1 100); do
  scan="$(call GetInventoryScan "{\"scan_id\": \"$scan_id\"}")"
  echo "$scan" | grep -q '"state": "RUNNING"' || break
  sleep 0.2
done
echo "$scan" | grep -q '"state": "PARTIALLY_FAILED"' || fail "scan did not end PARTIALLY_FAILED: $scan"
echo "$scan" | grep -q 'FAILURE_KIND_ACCESS_DENIED' || fail "sandbox's denial is not in the scan: $scan"

all="$(count_tables '{"page_size": 1000}')"
[ "$all" -gt 300 ] || fail "only $all tables listed after the scan"
for filter in '{"account_ids": ["111111111111"]}' '{"account_label_selector": "team=search"}' \
  '{"regions": ["us-east-1"]}' '{"mode": "ENCRYPTION_MODE_CUSTOMER_MANAGED"}' \
  '{"kms_key": "arn:aws:kms:eu-west-1:111111111111:alias/payments-a"}' '{"table_name_prefix": "payments-"}'; do
  n="$(count_tables "$filter")"
  { [ "$n" -gt 0 ] && [ "$n" -lt "$all" ]; } || fail "filter $filter listed $n of $all tables"
done
call GetKeyUsage '{"kms_key": "alias/payments-a", "account_id": "111111111111", "region": "eu-west-1"}' \
  | grep -q '"tableName": "payments-ledger"' || fail "GetKeyUsage does not list payments-ledger"
echo "demo: scan PARTIALLY_FAILED with sandbox denied, $all tables listed, every filter narrows the list"

# A batch key migration from key A to key B in payments/eu-west-1, as the README shows: plan, create, watch,
# history, rollback, all through grpcurl.
ccall() { grpcurl -plaintext -H "x-tablecrypt-caller:$1" -d "$3" "$ADDR" "tablecrypt.v1.TableEncryption/$2"; }
SEL='"selector": {"account_ids": ["111111111111"], "regions": ["eu-west-1"], "current_kms_key": "alias/payments-a"}'
TARGET='"target": {"mode": "ENCRYPTION_MODE_CUSTOMER_MANAGED", "kms_key": "alias/payments-b"}'
plan="$(ccall alice CreateChangeRequest "{$SEL, $TARGET, \"validate_only\": true}")"
planned="$(echo "$plan" | grep -o '"change": [0-9]*' | head -n 1 | grep -o '[0-9]*$' || true)"
[ -n "$planned" ] && [ "$planned" -gt 10 ] || fail "the plan changes too few tables: $(echo "$plan" | head -c 600)"
echo "$plan" | grep -q '"changeRequestId"' && fail "validate_only returned a stored request"

watch_to_end() {
  local out
  out="$(timeout 180 grpcurl -plaintext -d "{\"change_request_id\": \"$1\"}" "$ADDR" \
    tablecrypt.v1.TableEncryption/WatchChangeRequest)" || fail "watching $1 failed or timed out"
  echo "$out" | grep -o '"state": "CHANGE_REQUEST_STATE_[A-Z_]*"' | tail -n 1
}
created="$(ccall alice CreateChangeRequest "{$SEL, $TARGET, \"request_id\": \"demo-a-to-b\", \"description\": \"retire key A\"}")"
id="$(echo "$created" | grep -o '"changeRequestId": "[^"]*"' | head -n 1 | cut -d'"' -f4)"
[ -n "$id" ] || fail "no change request created: $created"
# A retry repeats the request exactly (the same request_id with another request is ALREADY_EXISTS).
again="$(ccall alice CreateChangeRequest "{$SEL, $TARGET, \"request_id\": \"demo-a-to-b\", \"description\": \"retire key A\"}")"
echo "$again" | grep -q "\"changeRequestId\": \"$id\"" || fail "the same request_id made another request"
final="$(watch_to_end "$id")"
[ "$final" = '"state": "CHANGE_REQUEST_STATE_SUCCEEDED"' ] || fail "migration ended $final"
rotations="$(call ListKeyRotationHistory "{\"change_request_id\": \"$id\", \"page_size\": 1000}" | grep -c '"rotationId"' || true)"
[ "$rotations" -eq "$planned" ] || fail "history holds $rotations rows for $planned planned changes"
call GetTableEncryption '{"account_id": "111111111111", "region": "eu-west-1", "table_name": "payments-ledger"}' \
  | grep -q 'alias\|key/' || fail "GetTableEncryption failed after the migration"
call GetKeyUsage '{"kms_key": "alias/payments-a", "account_id": "111111111111", "region": "eu-west-1"}' \
  | grep -q '"unused": true' || fail "key A is still in use in eu-west-1 after the migration"

rollback="$(ccall bob RollbackChangeRequest "{\"change_request_id\": \"$id\"}")"
back="$(echo "$rollback" | grep -o '"changeRequestId": "[^"]*"' | head -n 1 | cut -d'"' -f4)"
[ -n "$back" ] || fail "no rollback request: $rollback"
final="$(watch_to_end "$back")"
[ "$final" = '"state": "CHANGE_REQUEST_STATE_SUCCEEDED"' ] || fail "rollback ended $final"
call GetKeyUsage '{"kms_key": "alias/payments-b", "account_id": "111111111111", "region": "eu-west-1"}' \
  | grep -q '"unused": true' || fail "key B is still in use after the rollback"
echo "demo: migrated $planned tables from key A to key B ($rotations history rows), then rolled back"

# The same migration with the CLI, as docs/operator-guide.md walks a newcomer through it (sections 1, 5 and 6):
# look around, plan (dry run), create with --yes and watch to the end, history, refresh, key usage, rollback.
# Exit codes and JSON are checked.
tc() { "$CARGO_TARGET_DIR/debug/tablecrypt" --server "http://$ADDR" "$@"; }
export TABLECRYPT_CALLER=alice
grep -q 'payments' <<<"$(tc accounts list)" || fail "tablecrypt accounts list does not show the imported accounts"
# Accounts from the organization (guide sections 4 and 10): a dry run writes nothing; then the organization's new
# account is registered and the imported ones adopted, labelled under org.tablecrypt/.
dry="$(tc accounts discover --dry-run)" || fail "tablecrypt accounts discover --dry-run exited $?"
grep -Eq '666666666666 .* register' <<<"$dry" || fail "the discovery dry run does not register payments-staging: $dry"
grep -Eq '111111111111 .* relabel' <<<"$dry" || fail "the discovery dry run does not adopt payments: $dry"
grep -q '666666666666' <<<"$(tc accounts list)" && fail "the discovery dry run registered an account"
tc accounts discover >/dev/null || fail "tablecrypt accounts discover exited $?"
discovered="$(tc accounts list --selector org.tablecrypt/team=payments)"
{ grep -q '111111111111' <<<"$discovered" && grep -q '666666666666' <<<"$discovered"; } \
  || fail "the payments accounts are not labelled org.tablecrypt/team=payments: $discovered"
echo "demo: discovery registered payments-staging from the organization and adopted the imported accounts"
set +e; tc inventory refresh >/dev/null 2>&1; code=$?; set -e
[ "$code" -eq 1 ] || fail "inventory refresh with the broken sandbox account exited $code, not 1"
grep -q 'payments-ledger' <<<"$(tc tables list --account 111111111111 --region eu-west-1)" \
  || fail "tablecrypt tables list does not show payments-ledger"
grep -q 'payments-ledger' <<<"$(tc keys usage alias/payments-a --account 111111111111 --region eu-west-1)" \
  || fail "tablecrypt keys usage does not show payments-ledger on key A"
KEY_A="alias/payments-a"   # resolved in every account-region the selector covers
# Fleet-wide, in one command: both regions of payments, the CloudFormation-owned table blocked.
fleet_plan="$(tc migrate --selector org.tablecrypt/team=payments --from-key "$KEY_A" --to-key alias/payments-b --dry-run)" \
  || fail "the fleet-wide dry run exited $?"
grep -Eq 'payments-infra .* IAC_OWNED' <<<"$fleet_plan" \
  || fail "the fleet-wide dry run does not block the CloudFormation-owned table: $fleet_plan"
grep -Eq '111111111111 .* us-east-1' <<<"$fleet_plan" || fail "the fleet-wide dry run does not cover us-east-1"
MIGRATE=(migrate --selector team=payments --region eu-west-1 --from-key "$KEY_A" --to-key alias/payments-b
  --description "retire payments key A")
plan="$(tc "${MIGRATE[@]}" --dry-run)" || fail "the CLI dry run exited $?"
echo "$plan"
grep -q '^Plan: [0-9]* tables to change in [0-9]* UpdateTable calls' <<<"$plan" || fail "the CLI dry run printed no plan"
grep -Eq 'payments-sessions .* 2 .* ReplicaUpdates .* eu-west-1 .* us-east-1' <<<"$plan" \
  || fail "the dry run does not show the global table's second call (its replica's key, alone)"
out="$(tc "${MIGRATE[@]}" --yes -o json)" || fail "tablecrypt migrate --yes exited $?: $out"
cli_id="$(python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["changeRequest"]["state"]=="CHANGE_REQUEST_STATE_SUCCEEDED", d["changeRequest"]; print(d["changeRequest"]["changeRequestId"])' <<<"$out")" \
  || fail "the CLI migration did not succeed: $(head -c 800 <<<"$out")"
grep -q 'alias/payments-b' <<<"$(tc history --request "$cli_id")" || fail "tablecrypt history does not show key B by its alias for $cli_id"
# Retiring key A (guide section 6): refresh first, as the guide says, then ask about the key.
tc inventory refresh --account 111111111111 >/dev/null || fail "refreshing the payments account failed"
grep -q 'no inventoried table' <<<"$(tc keys usage alias/payments-a --account 111111111111 --region eu-west-1)" \
  || fail "key A is still in use in eu-west-1 after the CLI migration"
tc requests rollback "$cli_id" --yes >/dev/null || fail "tablecrypt requests rollback exited $?"
set +e; tc requests get 00000000-0000-4000-8000-000000000000 >/dev/null 2>&1; code=$?; set -e
[ "$code" -eq 1 ] || fail "a missing request exited $code, not 1"
echo "demo: the CLI migrated payments/eu-west-1 from key A to key B ($cli_id), showed history and key usage, rolled back"
