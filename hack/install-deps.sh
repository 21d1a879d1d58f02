#!/usr/bin/env bash
# Installs, from Debian's archive, everything berth's build and tests need on a
# fresh Debian 12 machine. Idempotent: when every package is already installed it
# touches nothing and returns in well under a second.
#
# Usage: hack/install-deps.sh
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PACKAGES=(
	# build: protoc for tonic/prost code generation, libseccomp for the seccomp profile,
	# gcc + libc6-dev for -sys crates and the static C helpers of the test images
	protobuf-compiler libseccomp-dev gcc libc6-dev
	# networking: CNI plugins (bridge, host-local, portmap, loopback) and the
	# iptables that portmap drives
	containernetworking-plugins iptables iproute2
	# local registry and image building
	docker-registry apache2-utils umoci skopeo jq curl ca-certificates
	# busybox (dynamic, not busybox-static: see docs/testing.md) is copied into
	# the test images; nginx itself is only downloaded (apt-get download), never
	# installed, so no web server starts on this machine
	busybox
	# libraries the copied nginx binary links against (resolved with ldd here)
	libc6 libcrypt1 libpcre2-8-0 libssl3 zlib1g
	# image fixtures: setfattr for the xattr file of berth-test/layers, tar with
	# --sort/--xattrs, openssl for the reproducible bench data
	attr tar openssl
	# critest's IPC specs run ipcmk on the host; nsenter/unshare for tests
	util-linux
	# the sandbox tests ping a pod's IP from the host
	iputils-ping
	# CheckpointContainer dumps a container with CRIU (tests/cri136.rs)
	criu
	# tests/containerd_shim.rs runs Debian's containerd 1.6 with berth's shim (and runc for the bench)
	containerd runc
)

berth_need_root

missing=()
for pkg in "${PACKAGES[@]}"; do
	# dpkg-query prints "install ok installed" only for a fully configured package.
	status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
	[[ $status == "install ok installed" ]] || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
	berth_log "all ${#PACKAGES[@]} packages already installed"
	exit 0
fi
berth_log "installing: ${missing[*]}"

# Refresh the package lists at most once a day: an update costs several seconds,
# and lists from today are good enough to install from.
lists=/var/lib/apt/lists
if ! find "$lists" -maxdepth 1 -name '*_InRelease' -mmin -1440 2>/dev/null | grep -q .; then
	berth_log "apt-get update"
	apt-get update -qq
fi

# Package scripts must not start services (docker-registry's would listen on all
# interfaces with the distribution's own config). Debian's policy-rc.d hook does
# exactly that; add one only for this run when the machine has none.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
	printf '#!/bin/sh\n# added by berth hack/install-deps.sh for the duration of one install\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	trap 'rm -f "$policy"' EXIT
fi

apt-get install -y -qq --no-install-recommends \
	-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
	"${missing[@]}" >/dev/null
berth_log "done"
