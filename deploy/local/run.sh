#!/usr/bin/env bash
# Runs tablecrypt locally: starts PostgreSQL if needed, builds the server, applies migrations and serves the
# gRPC API on 127.0.0.1:50051 (metrics on 127.0.0.1:9464) until Ctrl-C.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$TABLECRYPT_ROOT"

ensure_postgres
ensure_database tablecrypt
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/tablecrypt}"
export TABLECRYPT_LOG_FORMAT="${TABLECRYPT_LOG_FORMAT:-pretty}"

log "building tablecrypt-server"
SQLX_OFFLINE=true cargo build --quiet --bin tablecrypt-server
log "serving on ${TABLECRYPT_LISTEN_ADDR:-127.0.0.1:50051} (Ctrl-C to stop)"
exec "$CARGO_TARGET_DIR/debug/tablecrypt-server" serve "$@"
