#!/usr/bin/env bash
# One HTTP stack and one TLS implementation across tonic, sqlx and the AWS SDK: fails when `cargo tree -d` (every
# target, dev and build dependencies included) shows a crate of the HTTP stack twice, or when ring, OpenSSL or
# native-tls come in beside rustls on aws-lc. Two copies mean two connection pools, two TLS configurations to keep
# patched and twice the build (issue "Runs where platform teams run it").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# --depth 0: only the duplicated packages, not the trees of who depends on them; a name with two versions.
dupes=$(cargo tree --workspace --duplicates --depth 0 --edges normal,build,dev --prefix none --format '{p}' |
    awk '{print $1, $2}' | sort -u | awk '{print $1}' | uniq -d |
    grep -E '^(hyper|h2|http|http-body|hyper-rustls|tokio-rustls|rustls)$' || true)
if [ -n "$dupes" ]; then
    echo "one-http-stack: these crates are built in two versions (cargo tree -i NAME shows who brings each):" >&2
    echo "$dupes" >&2
    exit 1
fi
others=$(cargo tree --workspace --edges normal,build,dev --prefix none --format '{p}' |
    awk '{print $1}' | sort -u | grep -E '^(ring|openssl|openssl-sys|native-tls)$' || true)
if [ -n "$others" ]; then
    echo "one-http-stack: a second TLS implementation beside rustls on aws-lc: $others" >&2
    exit 1
fi
echo "one-http-stack: one hyper, h2, http and rustls (aws-lc) across the workspace"
