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

# cgroup v2 and the kernels nodes run. Emulated (TCG) the VM runs fork+exec about 8x
# slower than this host, so: the compiled binaries of this build run inside over the
# share, two test threads (the VM has 2 vCPUs), hang guards stretched, and on 6.1 the
# suites whose code differs by kernel (overlay without lowerdir+, cgroup files) rather
# than all of them.
if [[ ${BERTH_TEST_VM:-1} == 0 ]]; then
	echo "hack/test.sh: BERTH_TEST_VM=0: the cgroup v2 VM suites did not run" >&2
	exit 0
fi
hack/vm.sh build
declare -A suite
while IFS='=' read -r name bin; do
	suite[$name]=$bin
done < <(cargo test --features fault-injection --no-run --message-format=json 2>/dev/null |
	jq -r 'select(.reason == "compiler-artifact" and .profile.test and (.target.kind | index("test")))
		| "\(.target.name)=\(.executable)"')
vm_suites() { # NAME...: NAME=BINARY arguments for hack/vm-suites.sh
	local name
	for name in "$@"; do
		[[ -n ${suite[$name]:-} ]] || { echo "hack/test.sh: no test binary for suite $name" >&2; exit 1; }
		echo "$name=${suite[$name]}"
	done
}
export BERTH_TEST_TIME_SCALE=5 BERTH_CHURN_PODS=40
mapfile -t on_612 < <(vm_suites containers sandbox security stats streaming crash churn)
mapfile -t on_61 < <(vm_suites containers sandbox security)
hack/vm.sh run --kernel 6.12 --timeout 20m -- hack/vm-suites.sh "${on_612[@]}"
hack/vm.sh run --kernel 6.1 --timeout 12m -- hack/vm-suites.sh "${on_61[@]}"
