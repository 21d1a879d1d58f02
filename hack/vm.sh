#!/usr/bin/env bash
# The test node: a Debian 12 VM with systemd as PID 1 on the unified cgroup v2 hierarchy,
# built from Debian's packages only, booted with qemu (KVM when it works, TCG otherwise).
#
# Usage:
#   hack/vm.sh build
#       Makes the image (debootstrap rootfs with both kernels, their initramfs, an ext4
#       disk image) under $BERTH_VM_DIR (default $BERTH_TEST_DIR/vm). Idempotent: a
#       second build reuses the cached image; a change of the recipe below rebuilds it.
#       Installs its own host packages (qemu-system-x86, debootstrap) from
#       bookworm-backports.
#   hack/vm.sh run [--kernel 6.1|6.12] [--share DIR]... [--timeout DURATION] -- COMMAND...
#       Boots a fresh copy of the image (never modified by a run), mounts this checkout
#       at the same path as here and each --share DIR at its own path, runs COMMAND as
#       root in a login environment (PATH with /usr/local/bin) from the checkout, streams
#       its output here and exits with COMMAND's status. The local test registries
#       (127.0.0.1:5000 and :5001 with auth, as hack/registry.sh runs them) serve the
#       host's registry storage, read-only, inside the VM.
#       --kernel: 6.12 (default; BERTH_VM_KERNEL) or 6.1, Debian 12's own.
#       --timeout: a `timeout` duration (default 30m). A VM that does not boot or does
#       not finish in time: a message, the console's tail and status 124 (timeout) or 125.
#   Env: BERTH_VM_CPUS (2), BERTH_VM_MEM (4096, MiB), BERTH_VM_ACCEL (kvm|tcg: skip the
#   detection), BERTH_VM_MIRROR / BERTH_VM_SECURITY_MIRROR (default: the ones apt uses),
#   BERTH_VM_CGROUP (v2, the default, or hybrid: systemd's cgroup v1 layout, booted with
#   systemd.unified_cgroup_hierarchy=0, as on older nodes).
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VM_DIR="${BERTH_VM_DIR:-$BERTH_TEST_DIR/vm}"
VM_CPUS="${BERTH_VM_CPUS:-2}"
VM_MEM="${BERTH_VM_MEM:-4096}"
# Seconds from qemu's start until the guest reports it is running the command. TCG boots
# in about 15 s here; a stock kernel under a broken KVM hangs with no message at all.
BOOT_DEADLINE="${BERTH_VM_BOOT_DEADLINE:-300}"

# ---------------------------------------------------------------------------------------
# The recipe. Everything from here to "end of the recipe" is hashed into the image's
# cache key: edit it and the next build makes a new image.

VM_SUITE=bookworm
# The VM runs berth's tests, not its build: hack/install-deps.sh's list minus the
# compiler, protoc, the -dev packages and the image-building tools.
VM_PACKAGES=(
	systemd systemd-sysv dbus udev kmod procps util-linux iproute2
	linux-image-amd64 initramfs-tools
	containernetworking-plugins iptables
	docker-registry curl ca-certificates jq
	busybox libseccomp2 libc6 libcrypt1 libpcre2-8-0 libssl3 zlib1g
	attr tar openssl iputils-ping
	# The peer that hack/bench.sh --vm runs beside berth (started by the bench, never at boot).
	containerd runc
	# AppArmor's userspace: apparmor_parser loads berth's default profile; critest's AppArmor
	# specs load their test profiles with `sudo apparmor_parser`.
	apparmor sudo
	# CheckpointContainer runs CRIU; bookworm's 3.17 works on bookworm's kernels, not the host's.
	criu
)
# Modules the initramfs needs to find the root disk; 9p, overlay, bridge and veth load
# from the rootfs.
VM_INITRD_MODULES=(virtio_pci virtio_blk ext4)
# Units that only slow the boot or would start a second registry on :5000.
VM_MASKED_UNITS=(
	docker-registry.service getty@tty1.service serial-getty@ttyS0.service
	serial-getty@ttyS1.service apt-daily.timer apt-daily-upgrade.timer
	e2scrub_all.timer e2scrub_reap.service fstrim.timer man-db.timer
	systemd-timesyncd.service containerd.service
)
VM_IMAGE_SIZE=6G

# The image's part of `run`: mounts the control share and runs the job script the host
# put there (vm_guest_job below, outside the recipe, so changing it needs no rebuild).
vm_guest_bootstrap() {
	cat <<'GUEST'
#!/bin/sh
# Installed by berth's hack/vm.sh: runs the job the host put into the control share.
mkdir -p /run/berth-ctl
modprobe -a 9p 9pnet_virtio
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288,access=any berth-ctl /run/berth-ctl; then
	echo "berth-vm-job: cannot mount the control share" >/dev/console
	printf '\175' | dd of=/dev/port bs=1 seek=244 count=1 status=none
	exit 1
fi
exec /bin/bash /run/berth-ctl/guest.sh
GUEST
}

vm_guest_unit() {
	cat <<'UNIT'
[Unit]
Description=berth hack/vm.sh job
After=local-fs.target systemd-udev-settle.service systemd-modules-load.service
Wants=local-fs.target

[Service]
# exec, not oneshot: a oneshot keeps the system from ever reaching "running".
Type=exec
ExecStart=/usr/local/sbin/berth-vm-job
StandardInput=null
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
UNIT
}

# vm_configure ROOTFS: everything done inside the debootstrapped tree.
vm_configure() {
	local root="$1" mirror="$2" security="$3" unit
	cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror $VM_SUITE main
deb $security $VM_SUITE-security main
EOF
	echo berth-vm >"$root/etc/hostname"
	printf '127.0.0.1 localhost\n127.0.1.1 berth-vm\n' >"$root/etc/hosts"
	: >"$root/etc/machine-id"
	printf '%s\n' "${VM_INITRD_MODULES[@]}" >>"$root/etc/initramfs-tools/modules"
	sed -i 's/^MODULES=.*/MODULES=list/' "$root/etc/initramfs-tools/initramfs.conf"
	vm_chroot "$root" apt-get update -qq
	# The newest Debian 12 build of 6.12 (bookworm-security), signed flavour.
	local k612
	k612=$(vm_chroot "$root" apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-amd64$' |
		awk '{print $1}' | sort -V | tail -n1)
	[[ -n $k612 ]] || berth_die "no linux-image-6.12.*+deb12-amd64 in $security"
	vm_chroot "$root" apt-get install -y -qq --no-install-recommends "$k612" >/dev/null
	vm_chroot "$root" update-initramfs -u -k all
	for unit in "${VM_MASKED_UNITS[@]}"; do
		ln -sf /dev/null "$root/etc/systemd/system/$unit"
	done
	vm_guest_bootstrap >"$root/usr/local/sbin/berth-vm-job"
	chmod 755 "$root/usr/local/sbin/berth-vm-job"
	vm_guest_unit >"$root/etc/systemd/system/berth-vm-job.service"
	ln -sf ../berth-vm-job.service "$root/etc/systemd/system/multi-user.target.wants/berth-vm-job.service"
	# No password, no login: the VM only ever runs the job.
	vm_chroot "$root" apt-get clean
}
# end of the recipe
# ---------------------------------------------------------------------------------------

recipe_hash() {
	{
		declare -p VM_SUITE VM_PACKAGES VM_INITRD_MODULES VM_MASKED_UNITS VM_IMAGE_SIZE
		declare -f vm_guest_bootstrap vm_guest_unit vm_configure
	} | sha256sum | cut -c1-16
}

# Mounts made for a chroot, undone on any exit.
CHROOT_MOUNTS=()
vm_chroot() {
	local root="$1"
	shift
	if ((${#CHROOT_MOUNTS[@]} == 0)); then
		mount -t proc proc "$root/proc" && CHROOT_MOUNTS+=("$root/proc")
		mount -t sysfs sys "$root/sys" && CHROOT_MOUNTS+=("$root/sys")
		mount --bind /dev "$root/dev" && CHROOT_MOUNTS+=("$root/dev")
		cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
	fi
	# policy-rc.d: package scripts must start nothing in the chroot.
	printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
	chmod 755 "$root/usr/sbin/policy-rc.d"
	LC_ALL=C DEBIAN_FRONTEND=noninteractive chroot "$root" "$@"
}
chroot_cleanup() {
	local m
	for ((m = ${#CHROOT_MOUNTS[@]} - 1; m >= 0; m--)); do
		umount -l "${CHROOT_MOUNTS[m]}" 2>/dev/null || true
	done
	CHROOT_MOUNTS=()
}

# apt's own mirrors, so the VM is built from what this machine is configured to use.
apt_mirror() { # SUFFIX: debian or debian-security
	grep -rhoE "https?://[^ ]+/$1/?( |$)" /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
		tr -d ' ' | sed 's:/$::' | head -n1 || true
}

install_host_packages() {
	local need=() pkg status
	for pkg in qemu-system-x86 debootstrap e2fsprogs; do
		status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
		[[ $status == "install ok installed" ]] || need+=("$pkg")
	done
	((${#need[@]} == 0)) && return 0
	# This machine's qemu-utils comes from bookworm-backports: qemu-system-x86 from plain
	# bookworm would conflict with it, so both come from backports.
	if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
		local mirror
		mirror="$(apt_mirror debian)"
		cat >/etc/apt/sources.list.d/berth-backports.sources <<EOF
# Added by berth's hack/vm.sh: qemu-system-x86 and debootstrap come from bookworm-backports.
Types: deb
URIs: ${mirror:-http://deb.debian.org/debian}
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
	fi
	berth_log "installing ${need[*]} from bookworm-backports"
	apt-get update -qq || berth_die "apt-get update failed: no network access to Debian's archive?"
	apt-get install -y -qq --no-install-recommends -t bookworm-backports "${need[@]}" >/dev/null ||
		berth_die "could not install ${need[*]} from bookworm-backports"
}

cmd_build() {
	berth_need_root
	local hash image_dir
	hash="$(recipe_hash)"
	image_dir="$VM_DIR/image-$hash"
	if [[ -f $image_dir/done ]]; then
		berth_log "image up to date: $image_dir"
		ln -sfn "image-$hash" "$VM_DIR/current"
		return 0
	fi
	install_host_packages
	berth_need_cmds qemu-system-x86_64 debootstrap mkfs.ext4 curl
	local mirror security
	mirror="${BERTH_VM_MIRROR:-$(apt_mirror debian)}"
	security="${BERTH_VM_SECURITY_MIRROR:-$(apt_mirror debian-security)}"
	mirror="${mirror:-http://deb.debian.org/debian}"
	security="${security:-http://deb.debian.org/debian-security}"
	curl -fsS -o /dev/null --max-time 20 "$mirror/dists/$VM_SUITE/InRelease" ||
		berth_die "cannot reach the Debian mirror $mirror (no network access to Debian's packages?)"

	mkdir -p "$VM_DIR/debs"
	# One build at a time: the build dir and the package cache are shared.
	exec 7>"$VM_DIR/build.lock"
	flock -w 3600 7 || berth_die "another hack/vm.sh build holds $VM_DIR/build.lock"
	local work="$VM_DIR/build-$hash"
	trap 'chroot_cleanup' EXIT
	rm -rf "$work"
	mkdir -p "$work/rootfs"
	local started=$SECONDS
	berth_log "debootstrap $VM_SUITE from $mirror (minutes on a cold cache)"
	local pkgs
	pkgs="$(IFS=,; echo "${VM_PACKAGES[*]}")"
	debootstrap --variant=minbase --include="$pkgs" --cache-dir="$VM_DIR/debs" \
		"$VM_SUITE" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
		{ tail -n 30 "$work/debootstrap.log" >&2; berth_die "debootstrap failed; see $work/debootstrap.log"; }
	berth_log "configuring the rootfs (kernel 6.12 from $security, initramfs)"
	vm_configure "$work/rootfs" "$mirror" "$security" >"$work/configure.log" 2>&1 ||
		{ tail -n 30 "$work/configure.log" >&2; berth_die "configuring the rootfs failed; see $work/configure.log"; }
	chroot_cleanup
	rm -f "$work/rootfs/usr/sbin/policy-rc.d" "$work/rootfs/etc/resolv.conf"
	trap - EXIT

	local vmlinuz version short
	for vmlinuz in "$work"/rootfs/boot/vmlinuz-*; do
		version="${vmlinuz##*/vmlinuz-}"
		short="$(echo "$version" | cut -d. -f1,2)"
		cp "$vmlinuz" "$work/vmlinuz-$short"
		cp "$work/rootfs/boot/initrd.img-$version" "$work/initrd-$short"
		echo "$version" >"$work/version-$short"
	done
	[[ -f $work/vmlinuz-6.1 && -f $work/vmlinuz-6.12 ]] || berth_die "the rootfs lacks a 6.1 or a 6.12 kernel"
	berth_log "making the disk image"
	mkfs.ext4 -q -F -L berth-vm -d "$work/rootfs" "$work/root.img" "$VM_IMAGE_SIZE" ||
		berth_die "mkfs.ext4 -d failed"
	rm -rf "$work/rootfs"
	touch "$work/done"
	rm -rf "$image_dir"
	mv "$work" "$image_dir"
	ln -sfn "image-$hash" "$VM_DIR/current"
	# Older images: a changed recipe leaves them unused.
	find "$VM_DIR" -maxdepth 1 -name 'image-*' ! -name "image-$hash" -exec rm -rf {} +
	berth_log "image ready in $((SECONDS - started)) s: $image_dir"
}

# ---------------------------------------------------------------------------------------
# run

# The guest side of `run`, copied into the control share by each run: mounts the shares
# the host describes there, starts the registries, runs the command and hands its
# status back.
vm_guest_job() {
	cat <<'GUEST'
# Written by berth's hack/vm.sh for one run.
ctl=/run/berth-ctl
report() { # STATUS: to the control share, then a fast exit through isa-debug-exit
	echo "$1" >"$ctl/status"
	sync
	printf "\\x$(printf %02x $(($1 > 127 ? 127 : $1)))" | dd of=/dev/port bs=1 seek=244 count=1 status=none
	systemctl poweroff --no-block
	exit 0
}
echo started >"$ctl/started"
exec >/dev/ttyS1 2>&1
stty -F /dev/ttyS1 raw -echo
# shellcheck disable=SC1091
. "$ctl/job"
i=0
for dir in "${SHARES[@]}"; do
	mkdir -p "$dir"
	mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288,access=any,cache=loose "share$i" "$dir" ||
		{ echo "vm: cannot mount share $dir"; report 125; }
	i=$((i + 1))
done
for reg in registry registry-auth; do
	[[ -f $ctl/$reg.yml ]] || continue
	mkdir -p "/var/lib/berth-vm/$reg"
	mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288,access=any,ro "$reg" "/var/lib/berth-vm/$reg" ||
		{ echo "vm: cannot mount the $reg storage"; report 125; }
	setsid docker-registry serve "$ctl/$reg.yml" </dev/null >"/run/$reg.log" 2>&1 &
done
for reg in registry registry-auth; do
	[[ -f $ctl/$reg.yml ]] || continue
	addr=$(sed -n 's/^  addr: //p' "$ctl/$reg.yml")
	for _ in $(seq 300); do
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$addr/v2/" || true)
		[[ $code == 200 || $code == 401 ]] && break
		sleep 0.1
	done
	[[ $code == 200 || $code == 401 ]] || { echo "vm: $reg did not come up on $addr"; cat "/run/$reg.log"; report 125; }
done
cd "$CHECKOUT" || report 125
bash --login "$ctl/command"
report $?
GUEST
}


die_run() { # STATUS MESSAGE: the console's tail helps say why a VM failed
	local status="$1"
	shift
	printf '[vm.sh] error: %s\n' "$*" >&2
	if [[ -s ${RUN_DIR:-}/console.log ]]; then
		echo "[vm.sh] last lines of the VM console ($RUN_DIR/console.log):" >&2
		tail -n 40 "$RUN_DIR/console.log" | tr -d '\r' >&2
	fi
	exit "$status"
}

# The accelerator: KVM only when a kernel actually boots under it. Some hosts have a
# /dev/kvm that hangs a stock kernel without any error (PVM), so the probe boots the
# image's kernel with an init that exits at once and waits for its panic message. The
# answer is kept per host kernel, qemu and image.
detect_accel() {
	local kernel="$1" initrd="$2" key cache probe_log
	if [[ -n ${BERTH_VM_ACCEL:-} ]]; then
		echo "$BERTH_VM_ACCEL"
		return
	fi
	if [[ ! -w /dev/kvm ]]; then
		echo tcg
		return
	fi
	key="$(uname -r)-$(qemu-system-x86_64 --version | head -n1 | tr -c 'a-zA-Z0-9.\n' _)-$(basename "$(readlink -f "$VM_DIR/current")")"
	cache="$VM_DIR/accel-$(echo "$key" | sha256sum | cut -c1-16)"
	if [[ -s $cache ]]; then
		cat "$cache"
		return
	fi
	probe_log="$(mktemp)"
	timeout 20 qemu-system-x86_64 -accel kvm -cpu host -m 256 -smp 1 -no-reboot \
		-display none -monitor none -serial "file:$probe_log" -nic none \
		-kernel "$kernel" -initrd "$initrd" \
		-append "console=ttyS0 panic=-1 rdinit=/bin/false" </dev/null >/dev/null 2>&1 || true
	if grep -q 'Kernel panic' "$probe_log"; then
		echo kvm | tee "$cache"
	else
		echo tcg | tee "$cache"
	fi
	rm -f "$probe_log"
}

cmd_run() {
	local kernel="${BERTH_VM_KERNEL:-6.12}" timeout_arg=30m shares=() dir
	while (($#)); do
		case "$1" in
		--kernel) kernel="${2:?--kernel needs 6.1 or 6.12}"; shift 2 ;;
		--share)
			dir="$(realpath -e "${2:?--share needs a directory}")" && [[ -d $dir ]] || berth_die "--share $2: no such directory"
			shares+=("$dir")
			shift 2
			;;
		--timeout) timeout_arg="${2:?--timeout needs a duration}"; shift 2 ;;
		--) shift; break ;;
		*) berth_die "unknown argument $1 (usage: hack/vm.sh run [--kernel 6.1|6.12] [--share DIR]... [--timeout D] -- COMMAND...)" ;;
		esac
	done
	(($#)) || berth_die "no COMMAND (usage: hack/vm.sh run [--share DIR]... -- COMMAND...)"
	berth_need_root
	command -v qemu-system-x86_64 >/dev/null ||
		berth_die "qemu-system-x86_64 is missing: hack/vm.sh build installs it (from bookworm-backports)"
	[[ $kernel == 6.1 || $kernel == 6.12 ]] || berth_die "--kernel: 6.1 or 6.12, not $kernel"
	local unified
	case "${BERTH_VM_CGROUP:-v2}" in
	v2) unified=1 ;;
	hybrid) unified=0 ;;
	*) berth_die "BERTH_VM_CGROUP: v2 or hybrid, not $BERTH_VM_CGROUP" ;;
	esac
	local image="$VM_DIR/current"
	[[ -f $image/done ]] || berth_die "no VM image in $VM_DIR: run hack/vm.sh build first"
	[[ "$(readlink "$image")" == "image-$(recipe_hash)" ]] ||
		berth_log "warning: the image predates a change of the recipe; hack/vm.sh build refreshes it"

	RUN_DIR="$(mktemp -d /tmp/berth-vm.XXXXXX)"
	local ctl="$RUN_DIR/ctl"
	mkdir -p "$ctl"
	local checkout="$BERTH_REPO_ROOT" virtfs=() dirs=() i=0
	dirs=("$checkout")
	for dir in "${shares[@]}"; do
		[[ $dir == "$checkout" ]] || dirs+=("$dir")
	done
	for dir in "${dirs[@]}"; do
		virtfs+=(-virtfs "local,path=$dir,mount_tag=share$i,security_model=none,multidevs=remap")
		i=$((i + 1))
	done
	vm_guest_job >"$ctl/guest.sh"
	{
		declare -p dirs | sed 's/^declare -a dirs=/SHARES=/'
		printf 'CHECKOUT=%q\n' "$checkout"
	} >"$ctl/job"
	{
		echo 'set -e'
		# What tunes a test run here tunes it there.
		local var
		while IFS= read -r var; do
			printf 'export %s=%q\n' "$var" "${!var}"
		done < <(compgen -e | grep -E '^(BERTH_|RUST_|CARGO_TERM_)' || true)
		# The guest's output port is a terminal: colours only when ours is one too.
		if [[ -t 1 ]]; then printf 'export TERM=%q\n' "${TERM:-dumb}"; else echo 'export TERM=dumb'; fi
		printf 'cd %q\n' "$checkout"
		printf 'set +e\n'
		printf '%q ' "$@"
		echo
	} >"$ctl/command"
	# The registries as hack/registry.sh runs them here, over a read-only share of the
	# same storage.
	local reg addr storage
	for reg in registry registry-auth; do
		storage="$BERTH_TEST_DIR/$reg"
		[[ -d $storage ]] || continue
		if [[ $reg == registry ]]; then addr="$BERTH_REGISTRY"; else addr="$BERTH_AUTH_REGISTRY"; fi
		virtfs+=(-virtfs "local,path=$storage,mount_tag=$reg,security_model=none,readonly=on")
		{
			printf 'version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n'
			printf 'storage:\n  filesystem:\n    rootdirectory: /var/lib/berth-vm/%s\n' "$reg"
			printf '  maintenance:\n    uploadpurging:\n      enabled: false\n    readonly:\n      enabled: true\n'
			printf '  redirect:\n    disable: true\n'
			printf 'http:\n  addr: %s\n  secret: berth-test-fixture\n' "$addr"
			printf 'health:\n  storagedriver:\n    enabled: false\n'
			if [[ $reg == registry-auth ]]; then
				cp "$BERTH_TEST_DIR/run/htpasswd" "$ctl/htpasswd" 2>/dev/null ||
					htpasswd -Bbn "$BERTH_AUTH_USER" "$BERTH_AUTH_PASSWORD" >"$ctl/htpasswd"
				printf 'auth:\n  htpasswd:\n    realm: berth-test\n    path: /run/berth-ctl/htpasswd\n'
			fi
		} >"$ctl/$reg.yml"
	done
	[[ -f $ctl/registry.yml ]] || berth_log "warning: no registry storage in $BERTH_TEST_DIR: no registry inside the VM"

	local accel accel_args
	accel="$(detect_accel "$image/vmlinuz-$kernel" "$image/initrd-$kernel")"
	if [[ $accel == kvm ]]; then
		accel_args=(-accel kvm -cpu host)
	else
		accel_args=(-accel tcg,thread=multi -cpu max)
	fi
	berth_log "booting Debian 12 with kernel $(cat "$image/version-$kernel") ($accel, $VM_CPUS vCPU, $VM_MEM MiB, cgroup ${BERTH_VM_CGROUP:-v2})"

	# The command's output comes on the second serial port, straight to our stdout; the
	# console (kernel and systemd) goes to a file for when something fails.
	local qemu_pid started=$SECONDS
	# AppArmor enforced, as on Debian and Ubuntu nodes (berth loads its own default profile;
	# apparmor.service, which loads the distribution's few profiles, is masked: ~10 s of
	# an emulated boot for profiles no test uses).
	timeout --foreground -k 10 "$timeout_arg" qemu-system-x86_64 "${accel_args[@]}" \
		-smp "$VM_CPUS" -m "$VM_MEM" -no-reboot -nic none -display none -monitor none \
		-serial "file:$RUN_DIR/console.log" -chardev stdio,id=out,signal=off -serial chardev:out \
		-device isa-debug-exit,iobase=0xf4,iosize=4 \
		-drive "file=$image/root.img,format=raw,if=virtio,snapshot=on" \
		-virtfs "local,path=$ctl,mount_tag=berth-ctl,security_model=none" \
		"${virtfs[@]}" \
		-kernel "$image/vmlinuz-$kernel" -initrd "$image/initrd-$kernel" \
		-append "console=ttyS0 root=/dev/vda rw systemd.unified_cgroup_hierarchy=$unified panic=-1 apparmor=1 security=apparmor quiet systemd.show_status=error systemd.mask=serial-getty@ttyS0.service systemd.mask=apparmor.service" \
		</dev/null &
	qemu_pid=$!
	# Until the guest says it has started, a hang (a kernel that never boots) ends early.
	while [[ ! -f $ctl/started ]] && kill -0 "$qemu_pid" 2>/dev/null; do
		if ((SECONDS - started > BOOT_DEADLINE)); then
			kill "$qemu_pid" 2>/dev/null || true
			wait "$qemu_pid" 2>/dev/null || true
			die_run 125 "the VM did not boot within $BOOT_DEADLINE s"
		fi
		sleep 0.5
	done
	[[ -f $ctl/started ]] && berth_log "booted in $((SECONDS - started)) s"
	local rc=0
	wait "$qemu_pid" || rc=$?
	if [[ -s $ctl/status ]]; then
		rc="$(<"$ctl/status")"
		berth_log "COMMAND exited $rc after $((SECONDS - started)) s"
		rm -rf "$RUN_DIR"
		exit "$rc"
	fi
	((rc == 124)) && die_run 124 "the VM did not finish within $timeout_arg"
	die_run 125 "the VM stopped (qemu status $rc) without reporting COMMAND's status"
}

case "${1:-}" in
build) cmd_build ;;
run) shift; cmd_run "$@" ;;
hash) recipe_hash ;;
*)
	echo "usage: $0 build | run [--kernel 6.1|6.12] [--share DIR]... [--timeout D] -- COMMAND..." >&2
	exit 2
	;;
esac
