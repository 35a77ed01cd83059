#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this). Installs what the tests need into
# target/tools/ first (npm and Python peers, DynamoDB Local, cargo-fuzz, cargo-deny), then runs:
# rustfmt check, the dependency checks (advisories, licences, sources, duplicate versions, MSRV),
# clippy with warnings denied, every test (unit, integration, doc), and a bounded fuzz run of the
# deaggregator.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
tools="${KINESIS_TOOLS_DIR:-$root/target/tools}"
step() { printf '\n=== %s\n' "$*"; }

step "install test tools"
bash scripts/install-tools.sh

step "rustfmt"
cargo fmt --all -- --check
cargo fmt --manifest-path aggregation-format/fuzz/Cargo.toml -- --check

step "dependencies: advisories, licences, sources, duplicates, MSRV"
bash scripts/check-deps.sh

step "clippy (warnings denied)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "tests (unit and integration)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-features --locked --no-fail-fast
else
  cargo test --workspace --all-features --locked --no-fail-fast --lib --bins --tests
fi

step "doc tests"
cargo test --workspace --all-features --locked --doc

step "docs (broken links denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps --locked --quiet

step "fuzz the deaggregator for ${FUZZ_SECONDS}s"
# cargo-fuzz needs unstable compiler flags; the machine has only the stable toolchain, which
# accepts them with RUSTC_BOOTSTRAP=1. New inputs go to target/, the committed corpus is read-only.
corpus_out="$root/target/fuzz-corpus/deaggregate"
mkdir -p "$corpus_out"
RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$root/target/fuzz" \
  "$tools/cargo/bin/cargo-fuzz" run --fuzz-dir aggregation-format/fuzz deaggregate \
  "$corpus_out" aggregation-format/fuzz/corpus/deaggregate \
  -- -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1

step "all checks passed"
