#!/usr/bin/env bash
# Runs critest (the CRI conformance suite; binary from $CRITEST) against a berth started
# with critest-config/: its own socket, state and root, the local registry behind
# registry mirrors, and the bridge network of critest-config/net.d.
# The local registry and test images must be up: hack/registry.sh start && hack/test-images.sh
# Extra arguments go to critest, e.g. hack/critest.sh --ginkgo.focus='PodSandbox'
# BERTH (default target/release/berth, built if missing) picks the daemon binary.
# hack/critest.sh --vm [--kernel 6.1|6.12] [critest args]: inside the cgroup v2 test VM.
# hack/critest.sh --containerd [--runtime berth|runc] [critest args]: through Debian's
# containerd 1.6 with berth's shim v2 (or runc) as its default runtime.
# --cgroup-driver cgroupfs|systemd (after --vm and --kernel, or first on the host) picks
# berth's cgroup driver (default: critest-config's, cgroupfs); systemd needs PID 1 systemd.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=hack/lib.sh
source hack/lib.sh

berth_need_root
: "${CRITEST:?set CRITEST to the critest binary (not shipped with berth)}"
[[ -x $CRITEST ]] || berth_die "CRITEST=$CRITEST is not executable"

berth=${BERTH:-target/release/berth}
if [[ ! -x $berth ]]; then
	cargo build --release
fi

# --vm [--kernel 6.1|6.12]: the same run inside the cgroup v2 test VM (hack/vm.sh), with
# this build of berth and the critest binary shared into it.
if [[ ${1:-} == --vm ]]; then
	shift
	kernel=()
	if [[ ${1:-} == --kernel ]]; then
		kernel=(--kernel "${2:?--kernel needs 6.1 or 6.12}")
		shift 2
	fi
	driver=()
	if [[ ${1:-} == --cgroup-driver ]]; then
		driver=(BERTH_CGROUP_DRIVER="${2:?--cgroup-driver needs cgroupfs or systemd}")
		shift 2
	fi
	critest_bin=$(realpath "$CRITEST")
	hack/vm.sh build
	# berth's log and critest's report land here, on the host: the VM's own /tmp is gone
	# when it powers off.
	results=$(mktemp -d /tmp/berth-critest-vm.XXXXXX)
	status=0
	hack/vm.sh run "${kernel[@]}" --share "$(dirname "$critest_bin")" --share "$results" --timeout 30m -- \
		env CRITEST="$critest_bin" BERTH="$(realpath "$berth")" BERTH_CRITEST_RUN_DIR="$results" "${driver[@]}" \
		hack/critest.sh "$@" || status=$?
	berth_log "berth log and critest report of the VM run: $results"
	exit "$status"
fi

# --containerd [--runtime berth|runc]: critest through Debian's containerd (a private one:
# its own config, root, state and socket in the run directory) whose default runtime is
# berth's shim v2 (containerd-shim-berth-v2, a link to $berth put first on its PATH), or
# runc's shim for the comparison.
if [[ ${1:-} == --containerd ]]; then
	shift
	runtime=berth
	if [[ ${1:-} == --runtime ]]; then
		runtime=${2:?--runtime needs berth or runc}
		shift 2
	fi
	case $runtime in
	berth | runc) ;;
	*) berth_die "--runtime $runtime: expected berth or runc" ;;
	esac
	command -v containerd >/dev/null || berth_die "containerd is not installed: run hack/install-deps.sh"
	exec 9>/run/berth-critest.lock
	flock 9
	run_dir=${BERTH_CRITEST_RUN_DIR:-$(mktemp -d /tmp/berth-critest.XXXXXX)}
	[[ $run_dir == /*/* ]] || berth_die "run directory $run_dir: expected an absolute path below /"
	mkdir -p "$run_dir/bin"
	ln -sf "$(realpath "$berth")" "$run_dir/bin/containerd-shim-berth-v2"
	socket=$run_dir/c.sock
	berth_containerd_config "$runtime" "$run_dir" "$socket" "$PWD/critest-config/net.d" >"$run_dir/containerd.toml"
	PATH="$run_dir/bin:$PATH" containerd --config "$run_dir/containerd.toml" >"$run_dir/containerd.log" 2>&1 &
	containerd_pid=$!
	cleanup_containerd() {
		kill "$containerd_pid" 2>/dev/null || true
		wait "$containerd_pid" 2>/dev/null || true
		# The shims of this containerd name its socket in their command line.
		pkill -f -- "-address $socket " 2>/dev/null || true
		sleep 0.5
		findmnt -rn -o TARGET | { grep "^$run_dir/" || true; } | sort -r | xargs -r -n1 umount -l
		# The bridge plugin never deletes its bridge.
		ip link del berth-cni0 2>/dev/null || true
		berth_log "containerd log: $run_dir/containerd.log"
	}
	trap cleanup_containerd EXIT
	for _ in $(seq 100); do
		[[ -S $socket ]] && break
		sleep 0.1
	done
	[[ -S $socket ]] || berth_die "containerd did not start; see $run_dir/containerd.log"
	"$CRITEST" \
		--runtime-endpoint "unix://$socket" \
		--image-endpoint "unix://$socket" \
		--test-images-file critest-config/test-images.yaml \
		--report-dir "$run_dir" \
		--ginkgo.skip='public image with digest' \
		"$@"
	exit
fi

driver=${BERTH_CGROUP_DRIVER:-}
if [[ ${1:-} == --cgroup-driver ]]; then
	driver=${2:?--cgroup-driver needs cgroupfs or systemd}
	shift 2
fi

# One critest run at a time per machine: they share the bridge name and the test images.
exec 9>/run/berth-critest.lock
flock 9

run_dir=${BERTH_CRITEST_RUN_DIR:-$(mktemp -d /tmp/berth-critest.XXXXXX)}
config=$run_dir/berth.toml
berth_render_critest_config "$config"
case $driver in
"") ;;
cgroupfs) sed -i 's/^cgroup_driver = .*/cgroup_driver = "cgroupfs"/' "$config" ;;
# Pods without a parent go under berth-critest.slice (critest names no parent).
systemd) sed -i 's/^cgroup_driver = .*/cgroup_driver = "systemd"\ndefault_cgroup_parent = "berth-critest.slice"/' "$config" ;;
*) berth_die "--cgroup-driver $driver: expected cgroupfs or systemd" ;;
esac
socket=$(sed -n 's/^socket = "\(.*\)"/\1/p' "$config")

"$berth" --config "$config" >"$run_dir/berth.log" 2>&1 &
berth_pid=$!
cleanup() {
	kill "$berth_pid" 2>/dev/null || true
	wait "$berth_pid" 2>/dev/null || true
	# What critest left running, and the netns dir berth keeps mounted between restarts.
	state=$(sed -n 's/^state = "\(.*\)"/\1/p' "$config")
	pkill -f "shim --sandbox-id .* --socket $state/" 2>/dev/null || true
	findmnt -rn -o TARGET | { grep "^$state/" || true; } | sort -r | xargs -r -n1 umount -l
	# With the systemd driver: the slice of critest's pods, and every unit left in it.
	if [[ $driver == systemd ]]; then
		systemctl stop berth-critest.slice 2>/dev/null || true
	fi
	# The bridge plugin never deletes its bridge.
	ip link del berth-cni0 2>/dev/null || true
	berth_log "berth log: $run_dir/berth.log"
}
trap cleanup EXIT

for _ in $(seq 100); do
	[[ -S $socket ]] && break
	sleep 0.1
done
[[ -S $socket ]] && kill -0 "$berth_pid" 2>/dev/null ||
	berth_die "berth did not start (is another one serving $socket?); see $run_dir/berth.log"

# The digest-pinned image cannot be rebuilt offline (docs/testing.md): skip that one spec.
"$CRITEST" \
	--runtime-endpoint "unix://$socket" \
	--image-endpoint "unix://$socket" \
	--test-images-file critest-config/test-images.yaml \
	--report-dir "$run_dir" \
	--ginkgo.skip='public image with digest' \
	"$@"
