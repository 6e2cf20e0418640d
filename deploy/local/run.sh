#!/usr/bin/env bash
# Runs tablecrypt locally against a demo fleet: starts PostgreSQL if needed, starts the fleet emulator with
# deploy/local/demo-fleet.yaml on 127.0.0.1:4566, builds and starts the server (migrations applied at start) on
# 127.0.0.1:50051 (metrics on 127.0.0.1:9464), builds the `tablecrypt` CLI, imports the demo accounts
# (deploy/local/demo-accounts.yaml) with it, starts one inventory scan, and serves until Ctrl-C, which stops
# everything.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$TABLECRYPT_ROOT"

ensure_postgres
ensure_python_tools
ensure_database tablecrypt
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/tablecrypt}"
export TABLECRYPT_LOG_FORMAT="${TABLECRYPT_LOG_FORMAT:-pretty}"
EMULATOR_ADDR="${FLEET_EMULATOR_LISTEN:-127.0.0.1:4566}"
export TABLECRYPT_AWS_ENDPOINT_URL="${TABLECRYPT_AWS_ENDPOINT_URL:-http://$EMULATOR_ADDR}"
# The demo fleet's hub key (not a real credential).
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-AKIAHUBTEST000000000}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-hub-secret}"
ADDR="${TABLECRYPT_LISTEN_ADDR:-127.0.0.1:50051}"
# Account discovery from the demo fleet's organization.
export TABLECRYPT_CONFIG="${TABLECRYPT_CONFIG:-deploy/local/demo-server.toml}"

log "building tablecrypt-server, fleet-emulator and the tablecrypt CLI"
SQLX_OFFLINE=true cargo build --quiet --bin tablecrypt-server --bin fleet-emulator --bin tablecrypt
CLI="$CARGO_TARGET_DIR/debug/tablecrypt"

log "starting the fleet emulator with deploy/local/demo-fleet.yaml on $EMULATOR_ADDR"
"$CARGO_TARGET_DIR/debug/fleet-emulator" --fleet deploy/local/demo-fleet.yaml --listen "$EMULATOR_ADDR" &
EMULATOR_PID=$!
# --insecure: plaintext gRPC and no authentication, for this local demo only (the server warns at start).
"$CARGO_TARGET_DIR/debug/tablecrypt-server" serve --insecure "$@" &
SERVER_PID=$!
trap 'kill "$SERVER_PID" "$EMULATOR_PID" 2>/dev/null || true' EXIT INT TERM

for _ in $(seq 1 100); do
  grpcurl -plaintext "$ADDR" list >/dev/null 2>&1 && break
  sleep 0.2
done

log "importing the demo accounts (deploy/local/demo-accounts.yaml)"
"$CLI" --server "http://$ADDR" accounts import deploy/local/demo-accounts.yaml

log "scanning the demo fleet"
"$CLI" --server "http://$ADDR" -o json inventory refresh --no-wait | grep -E '^  "(scanId|state)"' || true
log "ready: try  $CLI --server http://$ADDR tables list   (or grpcurl -plaintext -d '{}' $ADDR tablecrypt.v1.TableEncryption/ListTableEncryptions)"
wait "$SERVER_PID"
