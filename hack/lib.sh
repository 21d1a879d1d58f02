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
