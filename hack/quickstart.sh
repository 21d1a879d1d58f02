#!/usr/bin/env bash
# Runs the README quickstart, step by step, against a running berth, and checks what each
# step prints. CI runs the same steps without crictl (tests/quickstart.rs); this is the check
# with the real client.
# crictl is not shipped with berth: CRICTL names the binary (default: crictl on PATH).
# BERTH_SOCKET picks the daemon (default /run/berth/berth.sock, as hack/run.sh starts it).
# The image steps need the docker.io mirror of critest-config/certs.d (or internet access).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=hack/lib.sh
source hack/lib.sh

crictl=${CRICTL:-crictl}
command -v "$crictl" >/dev/null || berth_die "set CRICTL to a crictl binary"
socket=${BERTH_SOCKET:-/run/berth/berth.sock}
export CONTAINER_RUNTIME_ENDPOINT=unix://$socket IMAGE_SERVICE_ENDPOINT=unix://$socket
c() { "$crictl" "$@" 2>/dev/null; }
expect() { # WHAT TEXT PATTERN
	grep -qE -- "$3" <<<"$2" || berth_die "$1: expected /$3/ in: $2"
	berth_log "ok: $1"
}

expect "crictl version" "$(c version)" "RuntimeName: +berth"
info=$(c info)
expect "crictl info: runtime ready" "$info" '"type": "RuntimeReady"'
expect "crictl info: network ready" "$(jq -r '.status.conditions[] | select(.type=="NetworkReady") | .status' <<<"$info")" '^true$'
expect "crictl runtime-config" "$(c runtime-config)" "cgroup driver: +CGROUPFS"

pod=$(c runp examples/pod.json)
trap 'c rmp -f "$pod" >/dev/null || true' EXIT
expect "crictl runp" "$pod" '^[0-9a-f]{64}$'
expect "crictl pods" "$(c pods --id "$pod")" " Ready +quickstart +default"
inspect=$(c inspectp "$pod")
expect "crictl inspectp: ready" "$(jq -r .status.state <<<"$inspect")" '^SANDBOX_READY$'
expect "crictl inspectp: pod IP" "$(jq -r .status.network.ip <<<"$inspect")" '^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$'
expect "crictl inspectp: pause pid" "$(jq -r .info.pid <<<"$inspect")" '^[0-9]+$'
c pull docker.io/library/busybox:latest >/dev/null
ctr=$(c create "$pod" examples/container.json examples/pod.json)
expect "crictl create" "$ctr" '^[0-9a-f]{64}$'
expect "crictl start" "$(c start "$ctr")" "^$ctr$"
expect "crictl ps" "$(c ps --id "$ctr")" " Running +hello "
for _ in $(seq 50); do c logs "$ctr" | grep -q . && break; sleep 0.1; done
expect "crictl logs" "$(c logs "$ctr")" "^hello from berth$"
expect "crictl inspect" "$(jq -r .status.state <<<"$(c inspect "$ctr")")" '^CONTAINER_RUNNING$'
expect "crictl exec" "$(c exec "$ctr" cat /etc/hostname)" "^quickstart$"
expect "crictl exec: image volume" "$(c exec "$ctr" head -1 /image-etc/passwd)" "^root:x:0:0:"
expect "crictl exec -s exit code" "$("$crictl" exec -s --timeout 5 "$ctr" sh -c 'exit 3' 2>&1 || true)" "exited with 3"
expect "crictl exec --timeout" "$("$crictl" exec -s --timeout 1 "$ctr" sh -c 'sleep 10 & sleep 20' 2>&1 || true)" "timed out after 1s"
expect "crictl exec -it" "$(script -qc "$crictl exec -it $ctr tty" /dev/null </dev/null)" "^/dev/pts/[0-9]+"
"$crictl" port-forward "$pod" 18080:80 >/dev/null 2>&1 &
forward=$!
for _ in $(seq 50); do curl -fs http://127.0.0.1:18080/hostname >/dev/null 2>&1 && break; sleep 0.1; done
expect "crictl port-forward + curl" "$(curl -fsS http://127.0.0.1:18080/hostname)" "^quickstart$"
kill "$forward" 2>/dev/null || true
expect "crictl stats" "$(c stats --id "$ctr")" "hello"
expect "crictl statsp" "$(c statsp --id "$pod")" "quickstart"
expect "crictl update" "$(c update --memory 100000000 "$ctr")" "^$ctr$"
expect "crictl stop" "$(c stop "$ctr")" "^$ctr$"
expect "crictl ps -a" "$(c ps -a --id "$ctr")" " Exited +hello "
expect "crictl rm" "$(c rm "$ctr")" "^$ctr$"
expect "crictl stopp" "$(c stopp "$pod")" "Stopped sandbox $pod"
expect "crictl pods after stop" "$(c pods --id "$pod")" " NotReady +quickstart"
expect "crictl rmp" "$(c rmp "$pod")" "Removed sandbox $pod"
trap - EXIT

image=docker.io/library/busybox:latest
expect "crictl pull" "$(c pull "$image")" "Image is up to date for sha256:[0-9a-f]{64}"
expect "crictl images" "$(c images)" "docker.io/library/busybox +latest"
expect "crictl inspecti" "$(jq -r '.status.repoTags[]' <<<"$(c inspecti "$image")")" "^$image$"
expect "crictl imagefsinfo" "$(jq -r '.status.imageFilesystems[0].usedBytes.value' <<<"$(c imagefsinfo)")" '^[1-9][0-9]*$'
expect "crictl rmi" "$(c rmi "$image")" "Deleted: $image"
berth_log "the README quickstart works"
