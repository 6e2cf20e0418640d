#!/usr/bin/env bash
# The README's secure grpcurl examples against the real binary: TLS with a bearer token, mutual TLS with a client
# certificate, refusals without credentials, and the refusal to start without TLS or --insecure.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../deploy/local/env.sh"
cd "$TABLECRYPT_ROOT"
ensure_python_tools

SQLX_OFFLINE=true cargo build --quiet --bin tablecrypt-server
BIN="$CARGO_TARGET_DIR/debug/tablecrypt-server"
DB="tablecrypt_tls_$$"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
ADDR="localhost:$PORT"
DIR="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
  rm -rf "$DIR"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [ -f "$DIR/server.log" ] && tail -20 "$DIR/server.log" >&2; exit 1; }
ok() { echo "ok - $*"; }

# A throwaway CA, a server certificate for localhost, and a client certificate with a SPIFFE URI SAN.
cd "$DIR"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=tablecrypt smoke CA" \
  -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile server.ext \
  -out server.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=ci" \
  -keyout client.key -out client.csr 2>/dev/null
printf 'subjectAltName=URI:spiffe://smoke/ci\n' >client.ext
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile client.ext \
  -out client.pem 2>/dev/null
TOKEN="smoke-$(openssl rand -hex 16)"
cat >config.toml <<TOML
listen_addr = "127.0.0.1:$PORT"
metrics_addr = "off"
database_url = "postgres://postgres@127.0.0.1:5432/$DB"

[tls]
cert_file = "$DIR/server.pem"
key_file = "$DIR/server.key"
client_ca_file = "$DIR/ca.pem"

[[auth_tokens]]
identity = "ops-admin"
sha256 = "$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)"

[[grants]]
identity = "token:ops-admin"
role = "admin"

[[grants]]
identity = "spiffe://smoke/ci"
role = "viewer"
TOML
cd "$TABLECRYPT_ROOT"
psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE $DB"

# Without TLS or --insecure the server refuses to start, and says how to fix it.
if TABLECRYPT_LISTEN_ADDR="127.0.0.1:$PORT" DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" \
  "$BIN" serve >"$DIR/refused.log" 2>&1; then
  fail "started without TLS and authentication"
fi
grep -q -- "--insecure" "$DIR/refused.log" || fail "no hint in: $(cat "$DIR/refused.log")"
ok "refuses to start without TLS and authentication"

"$BIN" --config "$DIR/config.toml" serve >"$DIR/server.log" 2>&1 &
SERVER_PID=$!
# grpcurl finds methods through reflection, which needs an authenticated caller (health itself is open to probes
# that know its schema, as the Rust tests check).
MTLS=(-cacert "$DIR/ca.pem" -cert "$DIR/client.pem" -key "$DIR/client.key")
for _ in $(seq 1 100); do
  grpcurl "${MTLS[@]}" -d '{"service": ""}' "$ADDR" grpc.health.v1.Health/Check >/dev/null 2>&1 && break
  sleep 0.1
done
grpcurl "${MTLS[@]}" -d '{"service": ""}' "$ADDR" grpc.health.v1.Health/Check | grep -q SERVING \
  || fail "health over TLS"
ok "health over mutual TLS"
out="$(grpcurl -cacert "$DIR/ca.pem" "$ADDR" list 2>&1 || true)"
grep -q "Unauthenticated" <<<"$out" || fail "reflection without credentials: $out"
ok "reflection without credentials: Unauthenticated"


grpcurl -cacert "$DIR/ca.pem" -H "authorization: Bearer $TOKEN" -d '{"account": {"account_id": "123456789012",
  "role_arn": "arn:aws:iam::123456789012:role/tablecrypt-member", "regions": ["eu-west-1"]}}' \
  "$ADDR" tablecrypt.v1.TableEncryption/RegisterAccount >/dev/null || fail "token register"
ok "bearer token: RegisterAccount as admin"

out="$(grpcurl "${MTLS[@]}" "$ADDR" tablecrypt.v1.TableEncryption/ListAccounts)" || fail "mTLS list"
grep -q 123456789012 <<<"$out" || fail "mTLS list: $out"
out="$(grpcurl "${MTLS[@]}" -d '{"account_id": "123456789012"}' \
  "$ADDR" tablecrypt.v1.TableEncryption/DeregisterAccount 2>&1 || true)"
grep -q "PermissionDenied" <<<"$out" || fail "viewer deregister: $out"
ok "client certificate: a viewer lists, and may not deregister"

out="$(grpcurl -cacert "$DIR/ca.pem" -H "authorization: Bearer $TOKEN" -d '{"outcome": "PERMISSION_DENIED"}' \
  "$ADDR" tablecrypt.v1.TableEncryption/ListAuditEvents)"
grep -q "spiffe://smoke/ci" <<<"$out" || fail "audit: $out"
ok "ListAuditEvents shows the refused call"

grep -q "$TOKEN" "$DIR/server.log" && fail "the token appears in the server log"
ok "the token is not in the server log"
