#!/usr/bin/env bash
# Checks the dependency graph (run by scripts/test.sh):
#   - cargo-deny: RustSec advisories (vulnerable, unsound, unmaintained), licences, sources, and
#     duplicate versions in the published crates' graph (deny.toml says what is allowed);
#   - MSRV: the workspace's rust-version is at least the rust-version every dependency of the
#     published crates declares. (Clippy, run with warnings denied by the test command, reads the
#     same rust-version and refuses standard-library APIs newer than it: `incompatible_msrv`.)
#
# Advisories come from the snapshot of the RustSec database in scripts/advisory-db/ (the
# machines that run the suite cannot reach GitHub), trimmed to the crates Cargo.lock names.
# A crate added to Cargo.lock after the snapshot fails the check until the snapshot is refreshed:
#   scripts/check-deps.sh --refresh <checkout or bare clone of github.com/rustsec/advisory-db>
#
# Needs cargo-deny (scripts/install-tools.sh installs it into target/tools/cargo/bin).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tools="${KINESIS_TOOLS_DIR:-$root/target/tools}"
snapshot="$root/scripts/advisory-db"

lock_crates() { sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.lock | sort -u; }

if [ "${1:-}" = "--refresh" ]; then
  src="${2:?usage: check-deps.sh --refresh <advisory-db checkout or bare clone>}"
  rev=$(git --git-dir="$(git -C "$src" rev-parse --absolute-git-dir)" log -1 --format='%H %cI')
  if [ ! -d "$src/crates" ]; then
    # A bare clone: take the tree of its HEAD.
    tree=$(mktemp -d)
    trap 'rm -rf "$tree"' EXIT
    git -C "$src" archive HEAD crates | tar x -C "$tree"
    src="$tree"
  fi
  rm -rf "$snapshot"
  mkdir -p "$snapshot/crates"
  lock_crates > "$snapshot/covered-crates.txt"
  while read -r crate; do
    if [ -d "$src/crates/$crate" ]; then cp -r "$src/crates/$crate" "$snapshot/crates/"; fi
  done < "$snapshot/covered-crates.txt"
  echo "$rev" > "$snapshot/SOURCE"
  echo "check-deps: snapshot of $rev, $(ls "$snapshot/crates" | wc -l) crates with advisories"
  exit 0
fi

deny="$tools/cargo/bin/cargo-deny"
[ -x "$deny" ] || { echo "check-deps: $deny is missing (run scripts/install-tools.sh)" >&2; exit 1; }

# Every crate of Cargo.lock must have been looked up when the snapshot was taken.
missing=$(comm -23 <(lock_crates) "$snapshot/covered-crates.txt")
if [ -n "$missing" ]; then
  echo "check-deps: Cargo.lock names crates the advisory snapshot was not taken for:" >&2
  echo "$missing" | sed 's/^/  /' >&2
  echo "refresh it: scripts/check-deps.sh --refresh <checkout of github.com/rustsec/advisory-db>" >&2
  exit 1
fi

# cargo-deny reads the database as a git repository under deny.toml's db-path, named after the
# database's URL; build that repository from the snapshot, dated as its source commit.
read -r _ snapshot_date < "$snapshot/SOURCE"
db="$root/target/deny/advisory-db-3157b0e258782691"
rm -rf "$db"
mkdir -p "$db"
cp -r "$snapshot/crates" "$db/"
(
  cd "$db"
  git init -q
  git add -A
  GIT_AUTHOR_DATE="$snapshot_date" GIT_COMMITTER_DATE="$snapshot_date" \
    git -c user.name=snapshot -c user.email=snapshot@localhost -c commit.gpgsign=false \
    commit -q -m "RustSec advisory-db snapshot"
)

# The graph is read by cargo (which may download crates); cargo-deny itself stays offline.
metadata="$root/target/deny/metadata.json"
cargo metadata --format-version 1 --all-features --locked > "$metadata"
"$deny" --offline --metadata-path "$metadata" check advisories licenses sources
"$deny" --offline --metadata-path "$metadata" --exclude-dev --exclude-unpublished check bans

# MSRV: no dependency of a published crate may need a newer compiler than the workspace says.
python3 - "$metadata" <<'PY'
import json, sys
meta = json.load(open(sys.argv[1]))
packages = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
def version(text):
    return tuple(int(part) for part in text.split("."))
def padded(v):
    return v + (0,) * (3 - len(v))
published = [i for i in meta["workspace_members"] if packages[i].get("publish") != []]
ours = {packages[i]["rust_version"] for i in published}
if len(ours) != 1 or None in ours:
    sys.exit(f"check-deps: the published crates must share one rust-version, found {ours}")
msrv = padded(version(ours.pop()))
seen, stack, too_new = set(), list(published), []
while stack:
    node = stack.pop()
    if node in seen:
        continue
    seen.add(node)
    needs = packages[node].get("rust_version")
    if needs and padded(version(needs)) > msrv:
        too_new.append(f"{packages[node]['name']} {packages[node]['version']} needs {needs}")
    for dep in nodes[node]["deps"]:
        if any(kind["kind"] in (None, "build") for kind in dep["dep_kinds"]):
            stack.append(dep["pkg"])
if too_new:
    sys.exit("check-deps: rust-version " + ".".join(map(str, msrv)) + " is too old for:\n  "
             + "\n  ".join(sorted(too_new)))
print(f"check-deps: MSRV {'.'.join(map(str, msrv))} holds for {len(seen)} crates")
PY
