#!/usr/bin/env bash
# The README's test command: installs what the tests need (Debian packages, the local
# registry and its test images), then runs formatting, lints and every test, the
# root-only integration tests included. Run as root from anywhere in the repo.
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
cargo clippy --all-targets -- -D warnings
cargo test
