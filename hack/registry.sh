#!/usr/bin/env bash
# Local OCI registries for berth's tests: Debian's docker-registry (the Docker
# distribution registry), on loopback only, with private config and storage.
#
#   plain:  127.0.0.1:${BERTH_REGISTRY_PORT:-5000}       storage $BERTH_TEST_DIR/registry
#   auth:   127.0.0.1:${BERTH_AUTH_REGISTRY_PORT:-5001}  storage $BERTH_TEST_DIR/registry-auth
#           htpasswd basic auth, user "berth", password "berth-secret"
#
# Usage: hack/registry.sh start|stop|status|url [auth]
#   start   start both (no-op for one already up); waits until /v2/ answers
#   stop    stop both; leaves no process behind
#   status  exit 0 when both answer, 1 otherwise
#   url     print host:port of the plain registry (with "auth": of the auth one)
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUN_DIR="$BERTH_TEST_DIR/run"
HTPASSWD="$RUN_DIR/htpasswd"

# Instance names: "registry" (plain) and "registry-auth".
inst_addr() { if [[ $1 == registry-auth ]]; then echo "$BERTH_AUTH_REGISTRY"; else echo "$BERTH_REGISTRY"; fi; }
inst_pidfile() { echo "$RUN_DIR/$1.pid"; }
inst_config() { echo "$RUN_DIR/$1.yml"; }
inst_log() { echo "$RUN_DIR/$1.log"; }

# inst_pid NAME: the pid from the pid file, if that process is still our registry
# (the pid is checked against the config path on its command line, so a recycled
# pid is never taken for ours).
inst_pid() {
	local pidfile pid
	pidfile="$(inst_pidfile "$1")"
	[[ -r $pidfile ]] || return 1
	pid="$(<"$pidfile")"
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	[[ -r /proc/$pid/cmdline ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$(inst_config "$1")" || return 1
	echo "$pid"
}

# inst_http_code NAME [curl args]: HTTP status of GET /v2/ ("000" when nothing answers).
inst_http_code() {
	local name="$1"
	shift
	curl -s -o /dev/null -w '%{http_code}' --max-time 2 --noproxy '*' "$@" "http://$(inst_addr "$name")/v2/" || true
}

inst_ready() {
	if [[ $1 == registry-auth ]]; then
		[[ $(inst_http_code "$1" -u "$BERTH_AUTH_USER:$BERTH_AUTH_PASSWORD") == 200 ]]
	else
		[[ $(inst_http_code "$1") == 200 ]]
	fi
}

write_config() {
	local name="$1" storage="$BERTH_TEST_DIR/$1" auth=""
	if [[ $name == registry-auth ]]; then
		auth="auth:
  htpasswd:
    realm: berth-test
    path: $HTPASSWD"
	fi
	mkdir -p "$storage"
	# No redis, no notifications, no debug listener: only what is written here runs.
	cat >"$(inst_config "$name")" <<EOF
# Written by hack/registry.sh; regenerated on every start.
version: 0.1
log:
  level: warn
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
  redirect:
    disable: true
http:
  addr: $(inst_addr "$name")
  # A fixed secret (loopback test fixture): silences the startup warning.
  secret: berth-test-fixture
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: false
$auth
EOF
}

start_one() {
	local name="$1" pid addr code i
	addr="$(inst_addr "$name")"
	if pid="$(inst_pid "$name")"; then
		if inst_ready "$name"; then
			berth_log "$name already running on $addr (pid $pid)"
			return 0
		fi
		berth_die "$name (pid $pid) runs but $addr/v2/ does not answer; see $(inst_log "$name")"
	fi
	code="$(inst_http_code "$name")"
	[[ $code == 000 ]] || berth_die "$addr is already taken by another process (GET /v2/ answered $code)"

	write_config "$name"
	# The registry reads REGISTRY_* variables as config overrides: keep ours pristine.
	local unset_args=() var
	while IFS= read -r var; do unset_args+=(-u "$var"); done < <(compgen -e | grep '^REGISTRY_' || true)
	# setsid: the registry outlives this script and the caller's terminal. 8>&- 9>&-:
	# it must not inherit (and so hold forever) the lock of this script or of
	# test-images.sh.
	env "${unset_args[@]}" setsid docker-registry serve "$(inst_config "$name")" \
		</dev/null >>"$(inst_log "$name")" 2>&1 8>&- 9>&- &
	pid=$!
	echo "$pid" >"$(inst_pidfile "$name")"

	for ((i = 0; i < 100; i++)); do
		if inst_ready "$name"; then
			berth_log "$name listening on $addr (pid $pid)"
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	tail -n 20 "$(inst_log "$name")" >&2 || true
	stop_one "$name"
	berth_die "$name did not come up on $addr"
}

stop_one() {
	local name="$1" pid i
	if pid="$(inst_pid "$name")"; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			kill -KILL "$pid" 2>/dev/null || true
			sleep 0.1
		fi
		berth_log "$name stopped (pid $pid)"
	fi
	rm -f "$(inst_pidfile "$name")"
}

ensure_htpasswd() {
	# bcrypt (-B) is the only hash docker-registry accepts. Generated once: a new
	# salt on every start would change the file for nothing.
	if [[ ! -s $HTPASSWD ]] || ! htpasswd -vbB "$HTPASSWD" "$BERTH_AUTH_USER" "$BERTH_AUTH_PASSWORD" >/dev/null 2>&1; then
		htpasswd -Bbn "$BERTH_AUTH_USER" "$BERTH_AUTH_PASSWORD" >"$HTPASSWD.tmp"
		mv "$HTPASSWD.tmp" "$HTPASSWD"
	fi
}

cmd="${1:-}"
case "$cmd" in
start)
	berth_need_root
	berth_need_cmds docker-registry htpasswd curl setsid flock
	mkdir -p "$RUN_DIR"
	# Concurrent starts (say, two test scripts at once) must not race for the ports.
	exec 8>"$RUN_DIR/registry.lock"
	flock -w 60 8 || berth_die "another hack/registry.sh holds $RUN_DIR/registry.lock"
	ensure_htpasswd
	start_one registry
	start_one registry-auth
	;;
stop)
	if [[ -d $RUN_DIR ]]; then
		exec 8>"$RUN_DIR/registry.lock"
		flock -w 60 8 || berth_die "another hack/registry.sh holds $RUN_DIR/registry.lock"
	fi
	stop_one registry
	stop_one registry-auth
	;;
status)
	rc=0
	for name in registry registry-auth; do
		if pid="$(inst_pid "$name")" && inst_ready "$name"; then
			echo "$name: running on $(inst_addr "$name") (pid $pid)"
		else
			echo "$name: not running"
			rc=1
		fi
	done
	exit "$rc"
	;;
url)
	if [[ ${2:-} == auth ]]; then echo "$BERTH_AUTH_REGISTRY"; else echo "$BERTH_REGISTRY"; fi
	;;
*)
	echo "usage: $0 start|stop|status|url [auth]" >&2
	exit 2
	;;
esac
