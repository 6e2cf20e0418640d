#!/usr/bin/env bash
# Runs tablecrypt locally: starts PostgreSQL if needed, starts the fleet emulator with the demo fleet on
# 127.0.0.1:4566, builds the server, applies migrations and serves the gRPC API on 127.0.0.1:50051 (metrics on
# 127.0.0.1:9464) until Ctrl-C, which stops both.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$TABLECRYPT_ROOT"

ensure_postgres
ensure_database tablecrypt
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/tablecrypt}"
export TABLECRYPT_LOG_FORMAT="${TABLECRYPT_LOG_FORMAT:-pretty}"
EMULATOR_ADDR="${FLEET_EMULATOR_LISTEN:-127.0.0.1:4566}"

log "building tablecrypt-server and fleet-emulator"
SQLX_OFFLINE=true cargo build --quiet --bin tablecrypt-server --bin fleet-emulator

log "starting the fleet emulator with deploy/local/demo-fleet.yaml on $EMULATOR_ADDR"
"$CARGO_TARGET_DIR/debug/fleet-emulator" --fleet deploy/local/demo-fleet.yaml --listen "$EMULATOR_ADDR" &
EMULATOR_PID=$!
trap 'kill "$EMULATOR_PID" 2>/dev/null || true' EXIT

log "serving on ${TABLECRYPT_LISTEN_ADDR:-127.0.0.1:50051} (Ctrl-C to stop)"
"$CARGO_TARGET_DIR/debug/tablecrypt-server" serve "$@"
