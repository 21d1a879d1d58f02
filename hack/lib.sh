# shellcheck shell=bash
# The variables below are used by the scripts that source this file.
# shellcheck disable=SC2034
# Shared helpers for berth's test-fixture scripts (install-deps.sh, registry.sh,
# test-images.sh). Source it; it defines variables and functions and runs nothing.
#
# Environment (all optional):
#   BERTH_TEST_DIR            state of the fixtures: registry storage, config, logs,
#                             .deb cache (default /var/lib/berth-test)
#   BERTH_REGISTRY_PORT       plain registry port on 127.0.0.1 (default 5000)
#   BERTH_AUTH_REGISTRY_PORT  htpasswd registry port on 127.0.0.1 (default 5001)

BERTH_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BERTH_TEST_DIR="${BERTH_TEST_DIR:-/var/lib/berth-test}"
BERTH_REGISTRY_PORT="${BERTH_REGISTRY_PORT:-5000}"
BERTH_AUTH_REGISTRY_PORT="${BERTH_AUTH_REGISTRY_PORT:-5001}"
# Both registries listen on loopback only: tests must never expose anything.
BERTH_REGISTRY="127.0.0.1:${BERTH_REGISTRY_PORT}"
BERTH_AUTH_REGISTRY="127.0.0.1:${BERTH_AUTH_REGISTRY_PORT}"
# Credentials of the auth registry. They are test fixtures, not secrets.
BERTH_AUTH_USER="berth"
BERTH_AUTH_PASSWORD="berth-secret"
export BERTH_TEST_DIR BERTH_REGISTRY_PORT BERTH_AUTH_REGISTRY_PORT

# Scripts run unattended in CI: never let apt or dpkg ask anything.
export DEBIAN_FRONTEND=noninteractive

berth_log() { printf '[%s] %s\n' "${0##*/}" "$*" >&2; }
berth_die() {
	printf '[%s] error: %s\n' "${0##*/}" "$*" >&2
	exit 1
}

berth_need_root() {
	[[ $(id -u) -eq 0 ]] || berth_die "must run as root"
}

berth_need_cmds() {
	local c missing=()
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || missing+=("$c")
	done
	((${#missing[@]} == 0)) || berth_die "missing commands: ${missing[*]} (run hack/install-deps.sh)"
}

# berth_render_critest_config OUT: writes critest-config/berth.toml to OUT with the
# @BERTH_REPO@ placeholder replaced by this checkout's absolute path (berth refuses
# relative paths in its config, and the repo can live anywhere).
berth_render_critest_config() {
	local out="$1"
	sed "s|@BERTH_REPO@|${BERTH_REPO_ROOT}|g" "${BERTH_REPO_ROOT}/critest-config/berth.toml" >"$out"
}

# berth_containerd_config RUNTIME DIR SOCKET CNI_CONF_DIR: prints the config of a private
# Debian containerd 1.6 (root and state below DIR, gRPC on SOCKET) whose CRI runs pods on
# RUNTIME: `berth` (berth's shim v2, io.containerd.berth.v2, found as
# containerd-shim-berth-v2 on containerd's PATH) or `runc` (io.containerd.runc.v2); CNI
# configs from CNI_CONF_DIR, images through the test registry's mirrors.
berth_containerd_config() {
	local runtime=$1 dir=$2 socket=$3 cni_conf_dir=$4 runtime_type
	case $runtime in
	berth) runtime_type=io.containerd.berth.v2 ;;
	runc) runtime_type=io.containerd.runc.v2 ;;
	*) berth_die "containerd runtime $runtime: expected berth or runc" ;;
	esac
	cat <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
[grpc]
  address = "$socket"
[plugins."io.containerd.grpc.v1.cri"]
  # critest removes this image once; containerd pulls it again for the next pod.
  sandbox_image = "registry.k8s.io/pause:3.9"
  # No CAP_SYS_RESOURCE on these machines: the pause's oom_score_adj -998 is clamped.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "$runtime"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.$runtime]
      runtime_type = "$runtime_type"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$cni_conf_dir"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$BERTH_REPO_ROOT/critest-config/certs.d"
EOF
}
