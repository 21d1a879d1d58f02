#!/usr/bin/env bash
# The README's test command: installs what the tests need (Debian packages, the local
# registry and its test images), then runs formatting, lints and every test, the
# root-only integration tests included (built with --features fault-injection, which the
# crash tests need), then the root suites again inside the test VM (hack/vm.sh: Debian 12
# with systemd on cgroup v2) on Debian 12's kernels 6.12 and 6.1. Run as root from
# anywhere in the repo. BERTH_TEST_VM=0 skips the VM part (say so when you report).
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

# cgroup v2 and the kernels nodes run: the root suites again inside the test VM.
if [[ ${BERTH_TEST_VM:-1} == 0 ]]; then
	echo "hack/test.sh: BERTH_TEST_VM=0: the cgroup v2 VM suites did not run" >&2
	exit 0
fi
hack/test-vm.sh
