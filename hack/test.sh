#!/usr/bin/env bash
# The README's test command: installs what the tests need (Debian packages, the local
# registry and its test images), then runs formatting, lints and every test, the
# root-only integration tests included (built with --features fault-injection, which the
# crash tests need). Run as root from anywhere in the repo.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ $(id -u) -ne 0 ]]; then
	echo "hack/test.sh: the integration tests start real pods; run as root" >&2
	exit 1
fi

hack/install-deps.sh
hack/registry.sh start
trap 'hack/registry.sh stop' EXIT
hack/test-images.sh

cargo fmt --all -- --check
# The fault-injection feature adds the crash points the crash tests kill the daemon at
# (src/fault.rs); with it off they compile to nothing, so one build serves every test.
cargo clippy --all-targets --features fault-injection -- -D warnings
cargo test --features fault-injection
