#!/usr/bin/env bash
# Benchmarks berth side by side with containerd (Debian 12's containerd 1.6 with runc),
# both driven by the same CRI client (benches/cri.rs) on this machine:
#   pods  RunPodSandbox / StopPodSandbox / RemovePodSandbox over $BENCH_PODS pods on a bridge
#         network (median, p90), memory per running pod (shim + pause, RSS and PSS), and the
#         daemon's RSS idle and with the pods running
#   containers  CreateContainer, StartContainer, StopContainer (a process that exits on
#         SIGTERM), RemoveContainer over $BENCH_PODS containers in one pod, and RunPodSandbox +
#         CreateContainer + StartContainer as one path (median, p90)
#   stats ListContainerStats and ListPodSandboxStats, and their Stream twins (first message and
#         whole stream), over $BENCH_STATS_CONTAINERS (50) running
#         containers, five per pod, $BENCH_STATS_RUNS (50) calls (median, p90); then
#         ListContainers and ListPodSandbox beside StreamContainers and StreamPodSandboxes
#         (first message and whole stream) over $BENCH_LIST_CONTAINERS (1000) containers
#         (real records of exited containers, fifty per pod), $BENCH_LIST_RUNS (20) calls,
#         and the daemon's RSS before and after those calls
#   pull  cold PullImage of the small busybox image and of the generated 200 MiB 8-layer
#         image (berth-bench/big:v1), and `gzip -dc | tar -x` of that image's layer blobs from
#         local disk one after the other (the single-core floor of the unpack alone)
#   churn $BENCH_CHURN_PODS pods, each with one container, run/created/started/stopped/removed
#         by 2 clients at once: the cycle time, each step's median, and the leak counters
#         (processes, mounts, netns, veths, IP leases, cgroups, files, daemon fds) after - before
#   lifecycle  $BENCH_PODS pods, each with one container, through RunPodSandbox, CreateContainer,
#         StartContainer, StopContainer (a process that exits on SIGTERM), RemoveContainer,
#         StopPodSandbox, RemovePodSandbox from 2 clients at once (critest's benchmark
#         parallelism): each call's median and p90, and the delays from the container's exit
#         (its finished_at) to StopContainer's return and to the GetContainerEvents STOPPED event
#   streaming  ExecSync of `true` (median, p90); throughput of `cat` of a 256 MiB file through
#         Exec over SPDY, and of a port-forward over SPDY reading 256 MiB from a server in the pod
#   contract  StopContainer (timeout 2 s) of a shell whose three children ignore SIGTERM, in a
#         pod sharing its PID namespace and with the container's own (time, and processes left
#         running when it returns); PullImage of a 4.4 MiB gzip bomb that expands to 4 GiB
#         with the default configuration (time to fail or finish, peak disk use)
#   containerd-shim  (by name only, not in all) the pods and containers benchmarks through
#         Debian's containerd 1.6 twice, with runc's shim and with berth's shim v2, side by side
# berth's runs of pods, containers and lifecycle are followed by its per-step breakdown (the
# mean time of each step of each call, from berth_operation_step_duration_seconds).
# Usage: sudo hack/bench.sh [--vm [--kernel 6.1|6.12]] [pods|containers|stats|pull|churn|lifecycle|streaming|contract|containerd-shim|all]...
#   (default all). --vm: the same run inside the cgroup v2 test VM (hack/vm.sh), berth and
#   Debian's containerd 1.6 with runc one after the other in one VM boot; the binaries are
#   built here and shared in. Where PID 1 is systemd (the VM) each runtime runs twice, on
#   its cgroupfs driver (labels berth, containerd) and on its systemd driver (berth-systemd;
#   containerd-systemd: runc with SystemdCgroup = true), the systemd runs over pods,
#   containers and lifecycle only, each pod in a kubelet-style slice
#   (kubepods-besteffort-pod<uid>.slice). Emulated (TCG) the VM runs everything several
#   times slower: compare the runtimes of one run, not with the host's figures.
# Env: BENCH_PODS (20), BENCH_RUNS (10), BENCH_CHURN_PODS (100), BENCH_CONTAINERD=0 to
# measure berth alone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=hack/lib.sh
source hack/lib.sh
berth_need_root

vm=() kernel=()
if [[ ${1:-} == --vm ]]; then
	vm=(--vm)
	shift
	if [[ ${1:-} == --kernel ]]; then
		kernel=(--kernel "${2:?--kernel needs 6.1 or 6.12}")
		shift 2
	fi
fi
# Inside the VM (BERTH_BENCH_BIN set by the --vm run below) the host has done the
# preparation: packages, registry, images, builds.
in_vm=${BERTH_BENCH_BIN:+1}
# One run at a time per machine: runs share /run/berth-bench, /var/lib/berth-bench and the
# bridge names (a --vm run uses none of them here).
if ((${#vm[@]} == 0)); then
	exec 9>/run/berth-bench.lock
	flock 9
fi

# One mode, several (`pods containers`) or all.
modes=("$@")
what=${*:-all}
wants() { [[ $what == all || " $what " == *" $1 "* ]]; }
pods=${BENCH_PODS:-20}
runs=${BENCH_RUNS:-10}
churn_pods=${BENCH_CHURN_PODS:-100}
with_containerd=${BENCH_CONTAINERD:-1}
repo=$(pwd)
work=/run/berth-bench
# berth keeps its netns directory mounted across its own restarts; a bench run owns it.
unmount_under() { findmnt -rn -o TARGET | { grep "^$1/" || true; } | sort -r | xargs -r -n1 umount -l; }
if ((${#vm[@]} == 0)); then
	unmount_under "$work"
	rm -rf "$work" && mkdir -p "$work"
fi
# The churn gives its pods this cgroup parent (per runtime), so their cgroups can be counted.
remove_cgroups() { # NAME
	local d
	for d in /sys/fs/cgroup/*/"$1" /sys/fs/cgroup/"$1"; do
		[[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
}

registry="127.0.0.1:${BERTH_REGISTRY_PORT:-5000}"
small="docker.io/library/busybox:latest"
big="$registry/berth-bench/big:v1"
bomb="$registry/berth-bench/bomb:v1"
if [[ -z $in_vm ]]; then
	hack/install-deps.sh
	# Only for the comparison; berth itself needs neither (the VM image has both).
	if [[ $with_containerd == 1 && ${#vm[@]} == 0 ]] && ! command -v containerd >/dev/null; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containerd runc >/dev/null
	fi
	hack/registry.sh start
	hack/test-images.sh
	# The big image only serves the pull benchmark; building it costs minutes.
	if wants pull; then
		hack/test-images.sh bench
	fi
	cargo build --release --bin berth --bench cri
	target=$(realpath "${CARGO_TARGET_DIR:-target}")
	bench=$(find "$target"/release/deps -maxdepth 1 -name 'cri-*' -type f -executable -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2)
	# The VM's registry serves the host's storage read-only: the bomb is pushed from here.
	if wants contract; then
		"$bench" push-bomb --image "$bomb"
	fi
else
	bench=$BERTH_BENCH_BIN
	target=$BERTH_BENCH_TARGET
	# The VM has no resolv.conf (no network); containerd refuses a pod without one to copy.
	[[ -e /etc/resolv.conf ]] || : >/etc/resolv.conf
fi
if ((${#vm[@]})); then
	hack/vm.sh build
	share=()
	[[ $target == "$repo"/* ]] || share=(--share "$target")
	# The BENCH_* knobs set here apply there too (hack/vm.sh passes only BERTH_*).
	knobs=()
	while IFS= read -r var; do
		knobs+=("$var=${!var}")
	done < <(compgen -e | grep '^BENCH_' || true)
	exec hack/vm.sh run "${kernel[@]}" "${share[@]}" --timeout "${BENCH_VM_TIMEOUT:-60m}" -- \
		env "${knobs[@]}" BERTH_BENCH_BIN="$bench" BERTH_BENCH_TARGET="$target" \
		BERTH_BENCH_REV="$(git rev-parse --short HEAD)" hack/bench.sh "${modes[@]}"
fi

# A bridge network per runtime: two runtimes must never share a bridge.
write_net() { # DIR BRIDGE SUBNET
	mkdir -p "$1"
	cat >"$1/10-bench.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "bench-$2", "plugins": [
  {"type": "bridge", "bridge": "$2", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "dataDir": "$work/ipam-$2", "ranges": [[{"subnet": "$3"}]]}},
  {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}]}
EOF
}

# Every figure also goes to a file, for the side-by-side summary at the end.
run_bench() { "$bench" "$@" | tee -a "$work/results"; }

# berth's own step timings (berth_operation_step_duration_seconds, from its metrics
# endpoint) around one bench mode: the mean time of each step of each call, so a figure
# comes with where it went. Empty for a runtime without them.
metrics_url=
scrape_steps() { # FILE
	: >"$1"
	[[ -n $metrics_url ]] || return 0
	curl -fsS --noproxy '*' "$metrics_url" | grep '^berth_operation_step_duration_seconds_\(sum\|count\)' >"$1" || true
}
step_report() { # LABEL MODE: the steps between $work/steps.before and now
	[[ -n $metrics_url ]] || return 0
	scrape_steps "$work/steps.after"
	awk -v label="$1" -v mode="$2" '
		{ split($1, a, "{"); kind = a[1]; sub(/.*_/, "", kind); key = "{" a[2] }
		FILENAME == ARGV[1] { before[kind key] = $2; next }
		{ after[kind key] = $2; keys[key] = 1 }
		END {
			for (k in keys) {
				n = after["count" k] - before["count" k]
				if (n <= 0) continue
				ms = (after["sum" k] - before["sum" k]) * 1000
				match(k, /operation="[^"]*"/); op = substr(k, RSTART + 11, RLENGTH - 12)
				match(k, /step="[^"]*"/); st = substr(k, RSTART + 6, RLENGTH - 7)
				printf "%-12s step (%s) %-16s %-16s n=%-4d mean %8.2f ms  total %9.1f ms\n", label, mode, op, st, n, ms / n, ms
			}
		}' "$work/steps.before" "$work/steps.after" | sort -k4,4 -k8,8nr | tee -a "$work/results"
}

rss_mib() { awk '/^Rss:/ {printf "%.2f", $2/1024}' "/proc/$1/smaps_rollup"; }

wait_socket() {
	for _ in $(seq 200); do
		[[ -S $1 ]] && return 0
		sleep 0.05
	done
	berth_die "no socket at $1"
}

daemon_pid=
stop_daemon() {
	if [[ -n $daemon_pid ]]; then
		kill "$daemon_pid" 2>/dev/null || true
		wait "$daemon_pid" 2>/dev/null || true
		daemon_pid=
	fi
}
trap 'stop_daemon; unmount_under "$work"; ip link del berthbench0 2>/dev/null || true; ip link del ctrbench0 2>/dev/null || true; remove_cgroups bench-churn-berth; remove_cgroups bench-churn-containerd' EXIT

# The modes a systemd-driver run measures: those whose pods take the bench's parent (the
# stats and churn modes give cgroupfs paths as parents).
systemd_modes=" pods containers lifecycle "
# Set per run: the kubelet-style slice stem for a systemd-driver run, empty for cgroupfs.
pod_slice=
measure_wants() { wants "$1" && { [[ -z $pod_slice ]] || [[ $systemd_modes == *" $1 "* ]]; }; }
measure() { # LABEL ENDPOINT
	local label=$1 endpoint=$2
	local slice_args=()
	[[ -z $pod_slice ]] || slice_args=(--pod-slice "$pod_slice")
	sleep 1
	echo "$label idle daemon RSS $(rss_mib "$daemon_pid") MiB"
	# A runtime that fails one part still gets measured on the others.
	if measure_wants pods; then
		scrape_steps "$work/steps.before"
		run_bench pods "${slice_args[@]}" --label "$label" --endpoint "$endpoint" --pods "$pods" --daemon-pid "$daemon_pid" ||
			echo "$label: the pod benchmark failed (above)"
		step_report "$label" pods
	fi
	if measure_wants containers; then
		scrape_steps "$work/steps.before"
		run_bench containers "${slice_args[@]}" --label "$label" --endpoint "$endpoint" --image "$small" --pods "$pods" ||
			echo "$label: the container benchmark failed (above)"
		step_report "$label" containers
	fi
	if measure_wants stats; then
		run_bench stats --label "$label" --endpoint "$endpoint" --image "$small" \
			--pods "${BENCH_STATS_CONTAINERS:-50}" --runs "${BENCH_STATS_RUNS:-50}" ||
			echo "$label: the stats benchmark failed (above)"
		run_bench lists --label "$label" --endpoint "$endpoint" --image "$small" \
			--pods "${BENCH_LIST_CONTAINERS:-1000}" --runs "${BENCH_LIST_RUNS:-20}" --daemon-pid "$daemon_pid" ||
			echo "$label: the list benchmark failed (above)"
	fi
	if measure_wants lifecycle; then
		scrape_steps "$work/steps.before"
		run_bench lifecycle "${slice_args[@]}" --label "$label" --endpoint "$endpoint" --image "$small" --pods "$pods" --clients 2 ||
			echo "$label: the lifecycle benchmark failed (above)"
		step_report "$label" lifecycle
	fi
	if measure_wants churn; then
		run_bench churn --label "$label" --endpoint "$endpoint" --image "$small" --pods "$churn_pods" \
			--clients 2 --daemon-pid "$daemon_pid" "${churn_args[@]}" ||
			echo "$label: the churn benchmark failed (above)"
	fi
	if measure_wants streaming; then
		run_bench streaming --label "$label" --endpoint "$endpoint" --image "$small" --runs "$((runs < 5 ? runs : 5))" ||
			echo "$label: the streaming benchmark failed (above)"
	fi
	if measure_wants contract; then
		run_bench stop-pid --label "$label" --endpoint "$endpoint" --image "$small" --runs "$((runs < 5 ? runs : 5))" ||
			echo "$label: the shared-PID stop benchmark failed (above)"
		# containerd's root is on tmpfs here (/run): its unpack of all 4 GiB would go to RAM,
		# so the bomb's comparison is berth without the bound (below), which does the same.
		if [[ $label == berth ]]; then
			run_bench bomb --label "$label" --endpoint "$endpoint" --image "$bomb" --count-dirs "$disk_dirs" ||
				echo "$label: the bomb benchmark failed (above)"
		fi
	fi
	if measure_wants pull; then
		run_bench pull --label "$label" --endpoint "$endpoint" --image "$small" --runs "$runs" ||
			echo "$label: the small pull benchmark failed (above)"
		run_bench pull --label "$label" --endpoint "$endpoint" --image "$big" --runs "$((runs < 5 ? runs : 5))" ||
			echo "$label: the big pull benchmark failed (above)"
	fi
}

# containerd-shim: Debian's containerd 1.6 twice in one run, with runc's shim
# (io.containerd.runc.v2) and then with berth's (io.containerd.berth.v2, the release berth
# linked as containerd-shim-berth-v2 first on containerd's PATH): the pods and containers
# benchmarks through each, then CreateContainer + StartContainer and the shim's RSS per pod
# side by side. Only run when asked for by name (not part of `all`).
if [[ " $what " == *" containerd-shim "* ]]; then
	command -v containerd >/dev/null || berth_die "containerd is not installed: run hack/install-deps.sh"
	mkdir -p "$work/shim-bin"
	ln -sf "$target/release/berth" "$work/shim-bin/containerd-shim-berth-v2"
	cat /usr/lib/cni/* "$(command -v containerd)" "$(command -v containerd-shim-runc-v2)" \
		"$(command -v runc)" "$target/release/berth" >/dev/null 2>&1 || true
	for runtime in runc berth; do
		label=ctrd-$runtime
		echo "== containerd $(containerd --version | awk '{print $3}') with the $runtime shim"
		write_net "$work/ctr-$runtime-net.d" ctrbench0 10.78.0.0/16
		berth_containerd_config "$runtime" "$work/ctr-$runtime" "$work/ctr-$runtime.sock" \
			"$work/ctr-$runtime-net.d" >"$work/ctr-$runtime.toml"
		PATH="$work/shim-bin:$PATH" containerd --config "$work/ctr-$runtime.toml" 2>"$work/ctr-$runtime.log" &
		daemon_pid=$!
		wait_socket "$work/ctr-$runtime.sock"
		run_bench pods --label "$label" --endpoint "unix://$work/ctr-$runtime.sock" --pods "$pods" \
			--daemon-pid "$daemon_pid" || echo "$label: the pod benchmark failed (above)"
		run_bench containers --label "$label" --endpoint "unix://$work/ctr-$runtime.sock" --image "$small" \
			--pods "$pods" || echo "$label: the container benchmark failed (above)"
		stop_daemon
		# The shims of a stopped containerd keep running until their pods are gone; the
		# benchmarks removed every pod, so none should be left.
		pgrep -f -- "-address $work/ctr-$runtime.sock" >/dev/null &&
			echo "$label: shims left running: $(pgrep -af -- "-address $work/ctr-$runtime.sock")"
		unmount_under "$work/ctr-$runtime"
		rm -rf "$work/ctr-$runtime"
		ip link del ctrbench0 2>/dev/null || true
	done
	echo "== side by side (median ms; RSS MiB per pod): containerd+berth shim, containerd+runc shim, berth/runc"
	awk '
		function key(line) { sub(/^[^ ]+ +/, "", line); sub(/ +n=.*/, "", line); return line }
		$1 == "ctrd-berth" || $1 == "ctrd-runc" {
			if ($0 ~ / n=[0-9]+ +median /) {
				for (i = 1; i < NF; i++) if ($i == "median") v[$1, key($0)] = $(i + 1)
				if (!(key($0) in seen)) { seen[key($0)] = 1; order[++n] = key($0) }
			} else if ($0 ~ /memory per pod/) {
				for (i = 1; i < NF; i++) {
					if ($i == "shim" && $(i + 1) == "RSS") v[$1, "shim RSS"] = $(i + 2)
					if ($i == "shim+pause" && $(i + 1) == "RSS") v[$1, "shim+pause RSS"] = $(i + 2)
				}
				if (!("shim RSS" in seen)) { seen["shim RSS"] = 1; order[++n] = "shim RSS" }
				if (!("shim+pause RSS" in seen)) { seen["shim+pause RSS"] = 1; order[++n] = "shim+pause RSS" }
			}
		}
		END {
			for (j = 1; j <= n; j++) {
				k = order[j]; b = v["ctrd-berth", k]; c = v["ctrd-runc", k]
				if (b == "" || c == "") continue
				printf "  %-26s %10.2f %10.2f   %.2f\n", k, b, c, (c > 0 ? b / c : 0)
			}
		}' "$work/results"
	[[ " $what " == " containerd-shim " ]] && exit 0
fi

# The runtimes measured second must not win by finding the CNI plugins and runtime binaries
# in the page cache the first one filled (a fresh VM starts cold: its disk is emulated).
cat /usr/lib/cni/* "$(command -v containerd)" "$(command -v containerd-shim-runc-v2)" \
	"$(command -v runc)" >/dev/null 2>&1 || true
# The cgroup drivers each runtime runs with: both where PID 1 is systemd (the VM), cgroupfs
# alone elsewhere.
drivers=(cgroupfs)
[[ -d /run/systemd/system ]] && drivers+=(systemd)
# After a systemd-driver run: the kubelet-style slices its pods were given (a kubelet
# removes a pod's slice itself; nothing else would).
stop_pod_slices() { systemctl stop kubepods.slice 2>/dev/null || true; }

echo "== berth ${BERTH_BENCH_REV:-$(git rev-parse --short HEAD)} (release build) on $(uname -r), $(stat -fc %T /sys/fs/cgroup)"
write_net "$work/berth-net.d" berthbench0 10.77.0.0/16
bench_berth() { # DRIVER LABEL
	echo "== berth on its $1 cgroup driver ($2)"
	cat >"$work/berth.toml" <<EOF
socket = "$work/berth.sock"
root = "/var/lib/berth-bench"
state = "$work/berth"
log_level = "warn"
cgroup_driver = "$1"
[cni]
conf_dir = "$work/berth-net.d"
bin_dirs = ["/usr/lib/cni"]
[registry]
config_path = ["$repo/critest-config/certs.d"]
[metrics]
enabled = true
address = "127.0.0.1:9191"
EOF
	rm -rf /var/lib/berth-bench
	rm -f "$work/berth.sock"
	"$target"/release/berth --config "$work/berth.toml" 2>"$work/berth-$1.log" &
	daemon_pid=$!
	wait_socket "$work/berth.sock"
	# Shims by their state dir; pause and containers by the churn's cgroup parent.
	churn_args=(--cgroup-parent /bench-churn-berth --bridge berthbench0
		--ipam-dir "$work/ipam-berthbench0/bench-berthbench0" --netns-dir "$work/berth/netns"
		--count-procs "$work/berth/" --count-mounts "$work/berth/"
		--count-dirs "/var/lib/berth-bench/sandboxes,/var/lib/berth-bench/containers,$work/berth/sandboxes,$work/berth/containers,$work/berth/s")
	disk_dirs=/var/lib/berth-bench
	metrics_url=http://127.0.0.1:9191/metrics
	pod_slice=
	[[ $1 == cgroupfs ]] || pod_slice=kubepods-besteffort
	measure "$2" "unix://$work/berth.sock"
	pod_slice=
	metrics_url=
	stop_daemon
	[[ $1 == cgroupfs ]] || stop_pod_slices
	rm -rf /var/lib/berth-bench
}
bench_berth cgroupfs berth
if [[ " ${drivers[*]} " == *" systemd "* ]]; then
	bench_berth systemd berth-systemd
fi

if wants contract; then
	echo "== berth with max_expansion_ratio = 0 (no bound: what every runtime does by default)"
	rm -f "$work/berth.sock"
	"$target"/release/berth --config "$work/berth.toml" --max-expansion-ratio 0 2>"$work/berth-unbounded.log" &
	daemon_pid=$!
	wait_socket "$work/berth.sock"
	run_bench bomb --label berth-unbound --endpoint "unix://$work/berth.sock" --image "$bomb" \
		--count-dirs /var/lib/berth-bench || echo "berth-unbound: the bomb benchmark failed (above)"
	stop_daemon
	rm -rf /var/lib/berth-bench
fi

if [[ $with_containerd == 1 ]]; then
	echo "== containerd $(containerd --version | awk '{print $3}') with runc $(runc --version | awk 'NR==1 {print $3}')"
	write_net "$work/ctr-net.d" ctrbench0 10.78.0.0/16
fi
bench_containerd() { # DRIVER LABEL
	echo "== containerd with runc on its $1 cgroup driver ($2)"
	local systemd_cgroup=false
	[[ $1 == cgroupfs ]] || systemd_cgroup=true
	cat >"$work/containerd.toml" <<EOF
version = 2
root = "$work/containerd/root"
state = "$work/containerd/state"
[grpc]
  address = "$work/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"
  # This machine lacks CAP_SYS_RESOURCE: the pause's oom_score_adj -998 must be clamped.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$work/ctr-net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$repo/critest-config/certs.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = $systemd_cgroup
EOF
	rm -f "$work/containerd.sock"
	containerd --config "$work/containerd.toml" 2>"$work/containerd-$1.log" &
	daemon_pid=$!
	wait_socket "$work/containerd.sock"
	# Shims by the daemon socket in their command line; netns pins in /run/netns (cni-*).
	cri=$work/containerd/root/io.containerd.grpc.v1.cri
	churn_args=(--cgroup-parent /bench-churn-containerd --bridge ctrbench0
		--ipam-dir "$work/ipam-ctrbench0/bench-ctrbench0" --netns-dir /run/netns
		--count-procs "$work/containerd.sock" --count-mounts "$work/containerd/,/run/netns/"
		--count-dirs "$cri/sandboxes,$cri/containers,$work/containerd/state/io.containerd.runtime.v2.task/k8s.io")
	disk_dirs=$work/containerd/root
	pod_slice=
	[[ $1 == cgroupfs ]] || pod_slice=kubepods-besteffort
	measure "$2" "unix://$work/containerd.sock"
	pod_slice=
	stop_daemon
	[[ $1 == cgroupfs ]] || stop_pod_slices
	rm -rf "$work/containerd"
}
if [[ $with_containerd == 1 ]]; then
	bench_containerd cgroupfs containerd
	if [[ " ${drivers[*]} " == *" systemd "* ]]; then
		bench_containerd systemd containerd-systemd
	fi
fi

if wants pull; then
	echo "== gzip -dc | tar -x of the big image's layer blobs, one after the other, from local disk"
	blobs=$work/blobs
	mkdir -p "$blobs"
	manifest=$(curl -fsS --noproxy '*' -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
		-H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
		"http://$registry/v2/berth-bench/big/manifests/v1")
	layers=()
	for digest in $(jq -r '.layers[].digest' <<<"$manifest"); do
		curl -fsS --noproxy '*' -o "$blobs/${digest#sha256:}" "http://$registry/v2/berth-bench/big/blobs/$digest"
		layers+=("$blobs/${digest#sha256:}")
	done
	extract=""
	for i in "${!layers[@]}"; do
		extract+="mkdir -p $work/x/$i && gzip -dc ${layers[$i]} | tar -x -C $work/x/$i && "
	done
	extract+="sync -f $work/x"
	run_bench shell --label gzip+tar --runs "$((runs < 5 ? runs : 5))" --setup "rm -rf $work/x" -- "$extract"
	rm -rf "$work/x" "$blobs"
fi

# berth beside containerd: each median of both, and berth's share of containerd's; where
# both drivers ran, the same on the systemd driver and what systemd adds to berth's call.
if [[ $with_containerd == 1 && -s $work/results ]]; then
	echo "== side by side (median ms; shim+pause RSS MiB per pod): berth, containerd, berth/containerd"
	awk '
		function key(line) { sub(/^[^ ]+ +/, "", line); sub(/ +n=.*/, "", line); return line }
		$1 == "berth" || $1 == "containerd" || $1 == "berth-systemd" || $1 == "containerd-systemd" {
			if ($0 ~ / n=[0-9]+ +median /) {
				for (i = 1; i < NF; i++) if ($i == "median") v[$1, key($0)] = $(i + 1)
				if (!(key($0) in seen)) { seen[key($0)] = 1; order[++n] = key($0) }
			} else if ($0 ~ /shim\+pause RSS/) {
				for (i = 1; i < NF; i++) if ($i == "shim+pause" && $(i + 1) == "RSS") v[$1, "shim+pause RSS"] = $(i + 2)
				if (!("shim+pause RSS" in seen)) { seen["shim+pause RSS"] = 1; order[++n] = "shim+pause RSS" }
			}
		}
		function table(b_label, c_label,   j, k, b, c) {
			for (j = 1; j <= n; j++) {
				k = order[j]; b = v[b_label, k]; c = v[c_label, k]
				if (b == "" || c == "") continue
				printf "  %-22s %10.2f %10.2f   %.2f\n", k, b, c, (c > 0 ? b / c : 0)
			}
		}
		END {
			table("berth", "containerd")
			for (j = 1; j <= n; j++) if (v["berth-systemd", order[j]] != "") sd = 1
			if (!sd) exit
			print "== systemd cgroup drivers (median ms): berth-systemd, containerd-systemd (runc, SystemdCgroup = true), berth-systemd/containerd-systemd"
			table("berth-systemd", "containerd-systemd")
			print "== what the systemd driver adds to berth (median ms): berth-systemd, berth (cgroupfs), difference"
			for (j = 1; j <= n; j++) {
				k = order[j]; s = v["berth-systemd", k]; b = v["berth", k]
				if (s == "" || b == "") continue
				printf "  %-22s %10.2f %10.2f   %+.2f\n", k, s, b, s - b
			}
		}' "$work/results"
fi
