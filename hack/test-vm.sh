#!/usr/bin/env bash
# The root integration suites inside the test VM (hack/vm.sh: Debian 12 with systemd on
# cgroup v2), on Debian 12's kernels 6.12 and 6.1: hack/test.sh's last step. Needs the
# test images in the local registry's storage (hack/test-images.sh); builds the VM image
# when it is missing or its recipe changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# cgroup v2 and the kernels nodes run. Emulated (TCG) the VM runs fork+exec about 8x
# slower than this host, so: the compiled binaries of this build run inside over the
# share, two test threads (the VM has 2 vCPUs), hang guards stretched, and on 6.1 the
# suites whose code differs by kernel (overlay without lowerdir+, cgroup files) rather
# than all of them.
hack/vm.sh build
list=$(mktemp)
trap 'rm -f "$list"' EXIT
cargo test --features fault-injection --no-run --message-format=json >"$list"
declare -A suite
while IFS='=' read -r name bin; do
	suite[$name]=$bin
done < <(jq -r 'select(.reason == "compiler-artifact" and .profile.test and (.target.kind | index("test")))
	| "\(.target.name)=\(.executable)"' "$list")
suites_for() { # ARRAY NAME[:FILTER]...: appends "NAME=BINARY [FILTER]" for hack/vm-suites.sh
	local -n out=$1
	local item name
	shift
	for item in "$@"; do
		name=${item%%:*}
		[[ -n ${suite[$name]:-} ]] || { echo "hack/test-vm.sh: no test binary for suite $name" >&2; exit 1; }
		if [[ $item == *:* ]]; then
			out+=("$name=${suite[$name]} ${item#*:}")
		else
			out+=("$name=${suite[$name]}")
		fi
	done
}
# What fits the CI budget (about 20 minutes emulated on 2 busy cores): on both kernels,
# every suite that touches cgroups, processes, mounts or networking (and AppArmor, which
# only the VM enforces), with the crash suite cut to its cgroup-relevant part (the startup
# sweep, kill -9 during a churn; its other 18 fault points are recovery logic that does not
# depend on the kernel). 6.1 differs where nodes differ: the rootfs without lowerdir+,
# cgroup files, id-mapped layers. CheckpointContainer dumps with CRIU only here (the host's
# kernel is newer than Debian's CRIU).
vm_suites=(containers sandbox security apparmor stats streaming churn systemd
	crash:the_startup_sweep crash:kill_9_at_random_instants
	cri136:image_volumes cri136:psi_and_io cri136:checkpoint)
# BERTH_VM_SUITES="suite[:filter] ..." runs those instead (a developer's quick check).
if [[ -n ${BERTH_VM_SUITES:-} ]]; then
	read -ra vm_suites <<<"$BERTH_VM_SUITES"
fi
on_612=() on_61=()
suites_for on_612 "${vm_suites[@]}"
suites_for on_61 "${vm_suites[@]}"
# The systemd cgroup driver (the default where PID 1 is systemd): the suites that make
# pods and containers once more with it, on 6.12 only (the driver's code does not differ
# by kernel; the systemd suite above runs on both).
systemd_pass=()
suites_for systemd_pass containers sandbox stats
for entry in "${systemd_pass[@]}"; do
	on_612+=("${entry%%=*}-systemd=env BERTH_TEST_CGROUP_DRIVER=systemd ${entry#*=}")
done
# The VM's kernels are ones its CRIU supports: the checkpoint test must dump for real there.
export BERTH_TEST_TIME_SCALE=5 BERTH_CHURN_PODS=40 BERTH_TEST_CRIU_WORKS=1
# Both kernels run even when the first fails: one CI run shows both.
status=0
hack/vm.sh run --kernel 6.12 --timeout 35m -- hack/vm-suites.sh "${on_612[@]}" || status=1
hack/vm.sh run --kernel 6.1 --timeout 35m -- hack/vm-suites.sh "${on_61[@]}" || status=1
exit "$status"
