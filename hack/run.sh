#!/usr/bin/env bash
# Builds berth and runs it in the foreground with its default configuration
# (socket /run/berth/berth.sock). On a fresh machine it first installs the Debian
# packages berth needs and, when /etc/cni/net.d holds no network config, writes a
# bridge network there (berth0, 10.88.0.0/16) so that pods get an IP.
# Extra arguments are passed to berth, e.g. hack/run.sh --log-level debug
#
# hack/run.sh --systemd [BERTH_ARGS...] instead installs berth as a systemd service where
# PID 1 is systemd: the binary to /usr/local/bin, data/systemd/berth.service to
# /etc/systemd/system (with BERTH_ARGS appended to ExecStart), then enables and
# (re)starts it and shows its status. Logs: journalctl -u berth.
#
# hack/run.sh --containerd-shim installs berth for containerd instead: the binary to
# /usr/local/bin with the name containerd looks up for runtime_type
# "io.containerd.berth.v2" (containerd-shim-berth-v2, a link to berth) beside it; the
# README's "containerd's shim v2" section has the containerd config that selects it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ $(id -u) -ne 0 ]]; then
	echo "hack/run.sh: berth manages namespaces, mounts and cgroups; run as root" >&2
	exit 1
fi

as_service=0
if [[ ${1:-} == --containerd-shim ]]; then
	hack/install-deps.sh
	cargo build --release
	install -m 0755 target/release/berth /usr/local/bin/berth
	ln -sf berth /usr/local/bin/containerd-shim-berth-v2
	echo "hack/run.sh: installed /usr/local/bin/containerd-shim-berth-v2 (runtime_type io.containerd.berth.v2)" >&2
	exit 0
fi
if [[ ${1:-} == --systemd ]]; then
	shift
	as_service=1
	if [[ ! -d /run/systemd/system ]]; then
		echo "hack/run.sh --systemd: PID 1 is not systemd here; run hack/run.sh without it" >&2
		exit 1
	fi
fi

hack/install-deps.sh
cargo build --release

conf_dir=/etc/cni/net.d
if ! compgen -G "$conf_dir/*.conf*" >/dev/null && ! compgen -G "$conf_dir/*.json" >/dev/null; then
	mkdir -p "$conf_dir"
	cp examples/10-berth-bridge.conflist "$conf_dir/"
	echo "hack/run.sh: wrote $conf_dir/10-berth-bridge.conflist" >&2
fi

if [[ $as_service == 1 ]]; then
	install -m 0755 target/release/berth /usr/local/bin/berth
	# The same binary as containerd's shim v2 runtime (io.containerd.berth.v2).
	ln -sf berth /usr/local/bin/containerd-shim-berth-v2
	unit=/etc/systemd/system/berth.service
	sed "s|^ExecStart=/usr/local/bin/berth\$|ExecStart=/usr/local/bin/berth${*:+ $*}|" \
		data/systemd/berth.service >"$unit"
	systemctl daemon-reload
	systemctl enable berth.service
	systemctl restart berth.service
	systemctl --no-pager status berth.service
	exit 0
fi

exec ./target/release/berth "$@"
