#!/usr/bin/env bash
# Installs everything the test suite and the benchmarks need that is not a Cargo dependency, into
# target/tools/ (ignored by git, reused when already present):
#   node/      npm: kinesis-local (faithful Kinesis stand-in), aws-kinesis-agg (Node peer)
#   python/    pip --target: aws-kinesis-agg + six, aiokpl, kcl-rs (Python peers)
#   dynamodb-local/  Amazon's DynamoDB Local jar, unpacked from the amplify-dynamodb-simulator npm package
#   cargo/     cargo-fuzz, cargo-deny
# Java 17, Node 20 and Python 3 come with the machine; a missing one is named and the script fails.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools="${KINESIS_TOOLS_DIR:-$root/target/tools}"
mkdir -p "$tools"

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "install-tools: '$1' is required ($2) but was not found on PATH" >&2; exit 1; }
}
need node "runs kinesis-local and the Node aws-kinesis-agg peer"
need npm "installs kinesis-local and the Node aws-kinesis-agg peer"
need java "runs DynamoDB Local"
need python3 "runs the Python aws-kinesis-agg and aiokpl peers"

KINESIS_LOCAL_VERSION=0.6.2
NODE_AGG_VERSION=4.2.8
PY_AGG_VERSION=1.2.3
AIOKPL_VERSION=0.2.0
KCL_RS_VERSION=0.1.4
DDB_SIMULATOR_VERSION=2.9.30
CARGO_FUZZ_VERSION=0.13.2
CARGO_DENY_VERSION=0.20.2

stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

# --- npm packages -------------------------------------------------------------------------------
node_dir="$tools/node"
node_want="kinesis-local@$KINESIS_LOCAL_VERSION aws-kinesis-agg@$NODE_AGG_VERSION"
if ! stamp_ok "$node_dir/.installed" "$node_want"; then
  echo "install-tools: npm install $node_want"
  mkdir -p "$node_dir"
  [ -f "$node_dir/package.json" ] || echo '{"name":"kinesis-rs-tools","private":true}' > "$node_dir/package.json"
  (cd "$node_dir" && npm install --no-audit --no-fund --loglevel=error $node_want)
  echo "$node_want" > "$node_dir/.installed"
fi

# --- Python peers ---------------------------------------------------------------------------------
py_dir="$tools/python"
py_want="aws-kinesis-agg==$PY_AGG_VERSION six aiokpl==$AIOKPL_VERSION kcl-rs==$KCL_RS_VERSION"
if ! stamp_ok "$py_dir/.installed" "$py_want"; then
  echo "install-tools: pip install --target $py_dir $py_want"
  rm -rf "$py_dir"
  python3 -m pip install --quiet --disable-pip-version-check --target "$py_dir" $py_want
  echo "$py_want" > "$py_dir/.installed"
fi

# --- DynamoDB Local -------------------------------------------------------------------------------
ddb_dir="$tools/dynamodb-local"
if ! stamp_ok "$ddb_dir/.installed" "$DDB_SIMULATOR_VERSION"; then
  echo "install-tools: DynamoDB Local from amplify-dynamodb-simulator@$DDB_SIMULATOR_VERSION"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "amplify-dynamodb-simulator@$DDB_SIMULATOR_VERSION" >/dev/null \
     && tar xzf "amplify-dynamodb-simulator-$DDB_SIMULATOR_VERSION.tgz")
  rm -rf "$ddb_dir"
  mkdir -p "$ddb_dir"
  cp -r "$tmp/package/emulator/." "$ddb_dir/"
  rm -rf "$tmp"
  [ -f "$ddb_dir/DynamoDBLocal.jar" ] || { echo "install-tools: DynamoDBLocal.jar missing from the package" >&2; exit 1; }
  echo "$DDB_SIMULATOR_VERSION" > "$ddb_dir/.installed"
fi

# --- cargo-fuzz -----------------------------------------------------------------------------------
if [ "${SKIP_CARGO_FUZZ:-0}" != 1 ]; then
  cargo_dir="$tools/cargo"
  if ! stamp_ok "$cargo_dir/.installed" "$CARGO_FUZZ_VERSION" || [ ! -x "$cargo_dir/bin/cargo-fuzz" ]; then
    echo "install-tools: cargo install cargo-fuzz@$CARGO_FUZZ_VERSION"
    cargo install --quiet --locked --root "$cargo_dir" "cargo-fuzz@$CARGO_FUZZ_VERSION"
    echo "$CARGO_FUZZ_VERSION" > "$cargo_dir/.installed"
  fi
fi

# --- cargo-deny (scripts/check-deps.sh) -----------------------------------------------------------
# Without default features: the advisory database is read from a snapshot, never fetched.
deny_dir="$tools/cargo"
if ! stamp_ok "$deny_dir/.deny-installed" "$CARGO_DENY_VERSION" || [ ! -x "$deny_dir/bin/cargo-deny" ]; then
  echo "install-tools: cargo install cargo-deny@$CARGO_DENY_VERSION"
  cargo install --quiet --locked --no-default-features --root "$deny_dir" "cargo-deny@$CARGO_DENY_VERSION"
  echo "$CARGO_DENY_VERSION" > "$deny_dir/.deny-installed"
fi

echo "install-tools: ready in $tools"
