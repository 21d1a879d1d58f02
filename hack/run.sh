#!/usr/bin/env bash
# Builds berth and runs it in the foreground with its default configuration
# (socket /run/berth/berth.sock). On a fresh machine it first installs the Debian
# packages berth needs and, when /etc/cni/net.d holds no network config, writes a
# bridge network there (berth0, 10.88.0.0/16) so that pods get an IP.
# Extra arguments are passed to berth, e.g. hack/run.sh --log-level debug
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ $(id -u) -ne 0 ]]; then
	echo "hack/run.sh: berth manages namespaces, mounts and cgroups; run as root" >&2
	exit 1
fi

hack/install-deps.sh
cargo build --release

conf_dir=/etc/cni/net.d
if ! compgen -G "$conf_dir/*.conf*" >/dev/null && ! compgen -G "$conf_dir/*.json" >/dev/null; then
	mkdir -p "$conf_dir"
	cp examples/10-berth-bridge.conflist "$conf_dir/"
	echo "hack/run.sh: wrote $conf_dir/10-berth-bridge.conflist" >&2
fi

exec ./target/release/berth "$@"
