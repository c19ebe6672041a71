#!/usr/bin/env bash
# Installs the packaging tools CI needs from crates.io, pinned, into one directory that later
# runs reuse (then this takes milliseconds and no network):
#   cargo-deb   builds the .deb (conformance/package/run.sh),
#   cargo-deny  checks licenses, duplicate versions and sources (deny.toml).
# ROOKERY_TOOLS: the install root (default ~/.cache/rookery-tools; binaries in its bin/).
# scripts/test.sh starts this in the background while apt, pip and npm wait on the network and
# the lint and build run, and waits for it before the tests.
set -euo pipefail
tools="${ROOKERY_TOOLS:-$HOME/.cache/rookery-tools}"
# Pinned: a new release must not change CI by itself. Bump here, with a CI run.
want=("cargo-deb 3.8.0" "cargo-deny 0.20.2")

missing=()
for spec in "${want[@]}"; do
  name=${spec% *} version=${spec#* }
  # Both print "NAME VERSION", e.g. "cargo-deny 0.20.2".
  have=$("$tools/bin/$name" --version 2>/dev/null || true)
  [ "$have" = "$spec" ] || missing+=("$name@$version")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing ${missing[*]} into $tools"
start=$(date +%s)
# One target directory for both: the dependencies they share at the same version and features
# are built once; it is thrown away after. Their release profiles are overridden for compile
# time: both run for seconds on a project this size, unoptimised too (cargo-deb keeps its
# per-package opt-level 2 for the xz code), while cargo-deny's fat LTO with one codegen unit
# alone takes minutes on two cores. Measured (docs/operations.md): 181 CPU seconds at
# opt-level 0 against 415 at opt-level 1; `cargo deny check` 2.5 s of CPU instead of 1.1.
target=$(mktemp -d)
trap 'rm -rf "$target"' EXIT
trap 'exit 143' TERM INT   # test.sh stops a failing run's install: the EXIT trap still cleans
CARGO_TARGET_DIR="$target" CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
  CARGO_PROFILE_RELEASE_OPT_LEVEL=0 cargo install --locked --quiet --root "$tools" "${missing[@]}"
echo "installed ${missing[*]} in $(( $(date +%s) - start )) s"
