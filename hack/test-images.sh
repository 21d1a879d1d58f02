#!/usr/bin/env bash
# Builds the OCI images that critest and berth's own tests pull, from Debian
# packages and a few lines of C, and pushes them to the local registries started by
# hack/registry.sh (started here when they are not up).
#
# Usage: hack/test-images.sh [--force] [all|bench|list]
#   all    (default) the critest and berth test images
#   bench  berth-bench/big:v1: ~200 MiB in 8 incompressible gzip layers, for benchmarks
#   list   print every pushed reference with its manifest digest and image ID
#   --force  rebuild and push even what the registry already holds
#
# Images keep upstream's repository paths, so that the hosts.toml mirrors in
# critest-config/certs.d map e.g. registry.k8s.io/e2e-test-images/busybox:1.29-2 to
# 127.0.0.1:5000/e2e-test-images/busybox:1.29-2 (docker.io images: library/NAME).
#
# Reproducible: the same script on the same Debian packages gives the same digests
# (fixed timestamps, sorted tar entries, numeric owners, no pax atime/ctime, fixed
# config "created"). Fast on reruns: nothing is built when the registry holds every
# reference and $BERTH_TEST_DIR/test-images-<all|bench>.stamp records a successful
# run of this very script (its hash, with the host's busybox and glibc versions); an
# edit of this file or a package upgrade rebuilds everything once, and since the
# builds are reproducible, unchanged images keep their digests.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# 2024-01-01T00:00:00Z: every file mtime and every "created" in the images.
SOURCE_DATE_EPOCH=1704067200
CREATED="2024-01-01T00:00:00Z"
export SOURCE_DATE_EPOCH
PATH_ENV="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Modes of copied files must not depend on the caller's umask.
umask 022
export LC_ALL=C

DEBS="$BERTH_TEST_DIR/debs"
WORK="$BERTH_TEST_DIR/build"
LAYOUT="$WORK/oci"
ROOTFS="$WORK/rootfs"

# The images: "BUILDER REF..." where BUILDER is a build_* function below that
# leaves the image under its own name as a tag of $LAYOUT, and each REF is
# [auth:]REPOSITORY:TAG, pushed to the plain registry (or with "auth:" to the
# htpasswd one).
IMAGES=(
	# critest's default container image. Also docker.io's busybox (berth's own tests,
	# README quickstart), a copy in the auth registry for the credential tests, and
	# the public.ecr.aws names that critest -benchmark pulls by default.
	"busybox e2e-test-images/busybox:1.29-2 library/busybox:latest library/busybox:1.36 \
		auth:library/busybox:latest \
		docker/library/busybox:1.35.0-glibc docker/library/busybox:1-uclibc docker/library/busybox:1 \
		docker/library/busybox:1-glibc docker/library/busybox:1-musl"
	"nginx e2e-test-images/nginx:1.14-2"
	"hostnet_nginx k8s-staging-cri-tools/hostnet-nginx-amd64:latest"
	"httpd e2e-test-images/httpd:2.4.39-4"
	"nonewprivs e2e-test-images/nonewprivs:1.3"
	"user_uid k8s-staging-cri-tools/test-image-user-uid:latest"
	"user_username k8s-staging-cri-tools/test-image-user-username:latest"
	"user_uid_group k8s-staging-cri-tools/test-image-user-uid-group:latest"
	"user_username_group k8s-staging-cri-tools/test-image-user-username-group:latest"
	"predefined_group k8s-staging-cri-tools/test-image-predefined-group:latest"
	"test_image_1 k8s-staging-cri-tools/test-image-1:latest"
	"test_image_2 k8s-staging-cri-tools/test-image-2:latest"
	"test_image_3 k8s-staging-cri-tools/test-image-3:latest"
	"test_image_latest k8s-staging-cri-tools/test-image-latest:latest"
	# critest pins test-image-digest to upstream's digest, which cannot be rebuilt
	# offline; the image is pushed by tag so that at least the repository exists.
	"test_image_digest k8s-staging-cri-tools/test-image-digest:latest"
	"test_image_tags k8s-staging-cri-tools/test-image-tags:1 k8s-staging-cri-tools/test-image-tags:2 k8s-staging-cri-tools/test-image-tags:3"
	"test_image_tag_test k8s-staging-cri-tools/test-image-tag:test"
	"test_image_tag_all k8s-staging-cri-tools/test-image-tag:all"
	# registry.k8s.io/pause and k8s.gcr.io/pause both mirror to this one repository,
	# so both names resolve to the same image ID.
	"pause pause:3.9"
	"layers berth-test/layers:v1"
)
BENCH_IMAGES=(
	"bench berth-bench/big:v1"
)

# ---------------------------------------------------------------- registry access

ref_registry() { if [[ $1 == auth:* ]]; then echo "$BERTH_AUTH_REGISTRY"; else echo "$BERTH_REGISTRY"; fi; }
ref_path() { echo "${1#auth:}"; }
ref_creds() { if [[ $1 == auth:* ]]; then echo "$BERTH_AUTH_USER:$BERTH_AUTH_PASSWORD"; fi; }

# registry_manifest REF [curl args]: the manifest of REF, as the registry serves it
# (--noproxy: a proxy from the environment must never see loopback requests).
registry_manifest() {
	local ref="$1" path creds
	shift
	path="$(ref_path "$ref")"
	creds="$(ref_creds "$ref")"
	curl -fsS --max-time 10 --noproxy '*' ${creds:+-u "$creds"} "$@" \
		-H 'Accept: application/vnd.oci.image.manifest.v1+json' \
		-H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
		"http://$(ref_registry "$ref")/v2/${path%:*}/manifests/${path##*:}" 2>/dev/null
}

ref_present() { registry_manifest "$1" -I >/dev/null; }

# fixture_hash: what the images are made from. Changes of it rebuild everything.
fixture_hash() {
	{
		cat "${BASH_SOURCE[0]}"
		dpkg-query -W busybox libc6
	} | sha256sum | cut -d' ' -f1
}

push_ref() {
	local tag="$1" ref="$2" creds
	creds="$(ref_creds "$ref")"
	# --preserve-digests: fail rather than let skopeo rewrite the manifest.
	skopeo --insecure-policy copy --quiet --preserve-digests --retry-times 3 --dest-tls-verify=false \
		${creds:+--dest-creds "$creds"} \
		"oci:$LAYOUT:$tag" "docker://$(ref_registry "$ref")/$(ref_path "$ref")"
}

# ---------------------------------------------------------------- build helpers

# fetch_deb PKG: path of PKG's .deb in the cache, downloaded on first use.
fetch_deb() {
	local pkg="$1" debs
	shopt -s nullglob
	debs=("$DEBS/${pkg}_"*.deb)
	shopt -u nullglob
	if ((${#debs[@]} == 0)); then
		mkdir -p "$DEBS"
		# apt drops privileges to _apt for downloads; let it write the cache.
		chown _apt "$DEBS" 2>/dev/null || true
		if ! (cd "$DEBS" && apt-get download -qq "$pkg" >/dev/null); then
			# Stale lists name a version the mirror no longer has: refresh once.
			apt-get update -qq
			(cd "$DEBS" && apt-get download -qq "$pkg" >/dev/null) || berth_die "apt-get download $pkg failed"
		fi
		shopt -s nullglob
		debs=("$DEBS/${pkg}_"*.deb)
		shopt -u nullglob
	fi
	# Several versions in the cache: the newest.
	printf '%s\n' "${debs[@]}" | sort -V | tail -n 1
}

# copy_libs ROOT SKIP_ROOT BINARY...: copies the shared objects each BINARY loads, as
# this host's ldd resolves them, to the same paths under ROOT, except those already
# under SKIP_ROOT (the lower layer's rootfs; "" for none).
copy_libs() {
	local root="$1" skip="$2" bin lib
	shift 2
	for bin in "$@"; do
		while read -r lib; do
			[[ $lib != MISSING:* ]] || berth_die "$bin needs ${lib#MISSING:}, not installed here"
			[[ -n $skip && -e $skip$lib ]] && continue
			[[ -e $root$lib ]] && continue
			mkdir -p "$root$(dirname "$lib")"
			cp -L "$lib" "$root$lib"
		done < <(ldd "$bin" | awk '
			/not found/ { print "MISSING:" $1; next }
			$2 == "=>" && $3 ~ /^\// { print $3; next }
			$1 ~ /^\// { print $1 }')
	done
}

# new_rootfs NAME: an empty staging directory for one layer.
new_rootfs() {
	rm -rf "${ROOTFS:?}/$1"
	mkdir -p "$ROOTFS/$1"
	echo "$ROOTFS/$1"
}

# add_layer FROM TO DIR COMMENT: tag TO = image FROM plus one layer holding DIR.
# GNU tar, not umoci insert: umoci 0.4.7's insert leaves the tar stream unterminated.
# Sorted names, fixed mtimes, numeric owners, no atime/ctime, and pax header names
# without the pid make the layer byte-for-byte reproducible.
add_layer() {
	local from="$1" to="$2" dir="$3" comment="$4" tarfile
	tarfile="$WORK/layer-$to.tar"
	find "$dir" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	(
		cd "$dir"
		find . -mindepth 1 -maxdepth 1 -printf '%P\n' | sort >"$tarfile.list"
		tar --create --file="$tarfile" --files-from="$tarfile.list" \
			--sort=name --format=posix --numeric-owner \
			--pax-option='exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime' \
			--xattrs --xattrs-include='user.*' --xattrs-include='security.capability'
	)
	umoci raw add-layer --image "$LAYOUT:$from" --tag "$to" \
		--history.created "$CREATED" --history.created_by "$comment" "$tarfile"
	rm -f "$tarfile" "$tarfile.list"
}

# new_image TAG: an image with no layer (FROM scratch).
new_image() {
	umoci new --image "$LAYOUT:$1"
	umoci config --image "$LAYOUT:$1" --no-history --created "$CREATED" \
		--config.env "$PATH_ENV"
}

# derive FROM TO [umoci config args]: TO = FROM with config changes, no new layer.
derive() {
	local from="$1" to="$2"
	shift 2
	umoci config --image "$LAYOUT:$from" --tag "$to" --no-history --created "$CREATED" "$@"
}

# finalize TAG: the fixed creation time, as the last step of every image.
finalize() {
	umoci config --image "$LAYOUT:$1" --no-history --created "$CREATED"
}

# compile NAME: a static binary from $WORK/src/NAME.c (no libraries to copy).
compile() {
	gcc -static -Os -s -o "$WORK/bin/$1" "$WORK/src/$1.c"
}

write_sources() {
	mkdir -p "$WORK/src" "$WORK/bin"
	# The pod infrastructure process: sleeps until SIGINT/SIGTERM, reaps children.
	cat >"$WORK/src/pause.c" <<'EOF'
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) { (void)sig; _exit(0); }
static void on_child(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }

int main(void) {
	struct sigaction sa = {0};
	sa.sa_handler = on_stop;
	sigaction(SIGINT, &sa, 0);
	sigaction(SIGTERM, &sa, 0);
	sa.sa_handler = on_child;
	sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
	sigaction(SIGCHLD, &sa, 0);
	for (;;) pause();
}
EOF
	# Installed setuid root: prints 0 unless no_new_privs kept the caller's uid.
	cat >"$WORK/src/nnp.c" <<'EOF'
#include <stdio.h>
#include <unistd.h>

int main(void) {
	printf("Effective uid: %d\n", (int)geteuid());
	return 0;
}
EOF
}

# ---------------------------------------------------------------- image builders

BASE_DONE=""
# The shared bottom layer of nearly every image: Debian's dynamic busybox with this
# host's glibc, each applet a hard link in /bin (hard links, not symlinks: masking
# /bin/ls must not mask busybox itself), pgrep and ipcs as scripts (Debian's busybox
# has neither; critest uses both), and passwd/group with the usual system users.
build_base() {
	[[ -z $BASE_DONE ]] || return 0
	local r applet
	r="$(new_rootfs base)"
	mkdir -p "$r"/{bin,dev,etc,home,proc,root,run,sys,tmp,usr/bin,usr/sbin,var/spool/mail,var/www}
	chmod 700 "$r/root"
	chmod 1777 "$r/tmp"
	ln -s ../run "$r/var/run"
	cp /bin/busybox "$r/bin/busybox"
	for applet in $(busybox --list); do
		[[ $applet == busybox || -e $r/bin/$applet ]] || ln "$r/bin/busybox" "$r/bin/$applet"
	done
	copy_libs "$r" "" /bin/busybox
	write_pgrep >"$r/bin/pgrep"
	write_ipcs >"$r/bin/ipcs"
	chmod 755 "$r/bin/pgrep" "$r/bin/ipcs"
	cat >"$r/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
EOF
	cat >"$r/etc/group" <<'EOF'
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:26:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
staff:x:50:
users:x:100:
nogroup:x:65534:
EOF
	printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' >"$r/etc/nsswitch.conf"
	new_image scratch
	add_layer scratch base "$r" "busybox $(dpkg-query -W -f='${Version}' busybox) with glibc $(dpkg-query -W -f='${Version}' libc6)"
	derive base base --config.cmd sh
	BASE_DONE=1
}

# pgrep PATTERN (-f full command line, -x exact, -l with names): what critest runs
# is `pgrep sleep`. The process list is gathered with shell builtins only, so that
# no helper process of this script can match.
write_pgrep() {
	cat <<'EOF'
#!/bin/sh
# Minimal pgrep for berth's test images (busybox has none): prints the pids whose
# process name (or, with -f, command line) matches the extended regex PATTERN.
full=0 exact=0 long=0
while [ $# -gt 0 ]; do
	case "$1" in
	-f) full=1 ;;
	-x) exact=1 ;;
	-l) long=1 ;;
	-fx | -xf) full=1 exact=1 ;;
	--) shift; break ;;
	-*) echo "pgrep: unsupported option $1" >&2; exit 2 ;;
	*) break ;;
	esac
	shift
done
[ $# -eq 1 ] || { echo "usage: pgrep [-flx] PATTERN" >&2; exit 2; }
procs=""
for dir in /proc/[0-9]*; do
	pid=${dir#/proc/}
	[ "$pid" = "$$" ] && continue
	if [ "$full" = 1 ]; then
		name=$(tr '\0' ' ' <"$dir/cmdline" 2>/dev/null) || continue
		name=${name% }
	else
		read -r name <"$dir/comm" 2>/dev/null || continue
	fi
	[ -n "$name" ] && procs="$procs$pid $name
"
done
printf '%s' "$procs" | awk -v pat="$1" -v exact="$exact" -v long="$long" '
	BEGIN { if (exact) pat = "^(" pat ")$"; found = 0 }
	{
		pid = $1; name = $0; sub(/^[0-9]+ /, "", name)
		if (name ~ pat) { found = 1; if (long) print pid, name; else print pid }
	}
	END { exit found ? 0 : 1 }'
EOF
}

# ipcs [-m|-q|-s|-a]: util-linux's column layout, read from /proc/sysvipc. critest
# checks that `ipcs -m` lists (or not) the id of a segment made on the host, so an
# empty table must print no digits at all, as util-linux's does.
write_ipcs() {
	cat <<'EOF'
#!/bin/sh
# Minimal ipcs for berth's test images (busybox has none), in util-linux's layout.
m=0 q=0 s=0
for arg in "$@"; do
	case "$arg" in
	-m | --shmems) m=1 ;;
	-q | --queues) q=1 ;;
	-s | --semaphores) s=1 ;;
	-a | --all) m=1 q=1 s=1 ;;
	*) echo "ipcs: unsupported option $arg" >&2; exit 1 ;;
	esac
done
[ "$m$q$s" = 000 ] && m=1 q=1 s=1
section() {
	file=/proc/sysvipc/$1
	awk -v kind="$1" '
	function hex8(n,   s, i, d) {
		if (n < 0) n += 4294967296
		s = ""
		for (i = 0; i < 8; i++) { d = n % 16; s = substr("0123456789abcdef", d + 1, 1) s; n = int(n / 16) }
		return "0x" s
	}
	function owner(uid) { return (uid in users) ? users[uid] : uid }
	FILENAME == "/etc/passwd" { split($0, f, ":"); if (!(f[3] in users)) users[f[3]] = f[1]; next }
	FNR == 1 { next }
	{
		perms = $3 % 1000; flags = int($3 / 1000)
		if (kind == "shm") {
			status = sprintf("%-6s %-6s", (flags % 2) ? "dest" : "", (int(flags / 2) % 2) ? "locked" : "")
			printf "%s %-10d %-10s %-10s %-10d %-10d %s\n", hex8($1), $2, owner($8), perms, $4, $7, status
		} else if (kind == "msg") {
			printf "%s %-10d %-10s %-10s %-12d %-12d\n", hex8($1), $2, owner($8), perms, $4, $5
		} else {
			printf "%s %-10d %-10s %-10s %-10d\n", hex8($1), $2, owner($5), perms, $4
		}
	}' /etc/passwd "$file" 2>/dev/null
}
# util-linux: a blank line before each table and one at the end.
if [ "$q" = 1 ]; then
	printf '\n------ Message Queues --------\nkey        msqid      owner      perms      used-bytes   messages    \n'
	section msg
fi
if [ "$m" = 1 ]; then
	printf '\n------ Shared Memory Segments --------\nkey        shmid      owner      perms      bytes      nattch     status      \n'
	section shm
fi
if [ "$s" = 1 ]; then
	printf '\n------ Semaphore Arrays --------\nkey        semid      owner      perms      nsems     \n'
	section sem
fi
echo
EOF
}

build_busybox() {
	build_base
	derive base busybox
}

NGINX_DONE=""
# Debian's nginx binary with its libraries, in the foreground as root master with a
# nobody worker, serving an index page on port 80, pid in /var/run/nginx.pid (critest
# waits for that file), logs on the container's stdout/stderr. Busybox stays below it:
# critest runs sh, cat, grep and sleep inside the nginx container.
build_nginx() {
	[[ -z $NGINX_DONE ]] || return 0
	build_base
	local r tmp deb
	r="$(new_rootfs nginx)"
	tmp="$(new_rootfs nginx-debs)"
	for deb in nginx nginx-common; do
		dpkg-deb -x "$(fetch_deb "$deb")" "$tmp"
	done
	mkdir -p "$r"/usr/sbin "$r"/etc/nginx/conf.d "$r"/usr/share/nginx/html "$r"/var/lib/nginx "$r"/var/log/nginx
	cp "$tmp/usr/sbin/nginx" "$r/usr/sbin/nginx"
	cp "$tmp/etc/nginx/mime.types" "$r/etc/nginx/mime.types"
	copy_libs "$r" "$ROOTFS/base" "$r/usr/sbin/nginx"
	cat >"$r/etc/nginx/nginx.conf" <<'EOF'
# berth test image: nginx in the foreground, logging to the container's stdio.
user nobody nogroup;
worker_processes 1;
daemon off;
pid /var/run/nginx.pid;
error_log stderr warn;

events {
	worker_connections 128;
}

http {
	include /etc/nginx/mime.types;
	default_type application/octet-stream;
	access_log /dev/stdout;
	sendfile on;
	keepalive_timeout 65;
	include /etc/nginx/conf.d/*.conf;
}
EOF
	nginx_server_conf 80 >"$r/etc/nginx/conf.d/default.conf"
	cat >"$r/usr/share/nginx/html/index.html" <<'EOF'
<!DOCTYPE html>
<html>
<head><title>Welcome to nginx!</title></head>
<body>
<h1>Welcome to nginx!</h1>
<p>berth test image: Debian's nginx serving this page.</p>
</body>
</html>
EOF
	add_layer base nginx-layer "$r" "nginx $(dpkg-deb -f "$(fetch_deb nginx)" Version) from Debian"
	derive nginx-layer nginx --config.cmd /usr/sbin/nginx --config.exposedports 80/tcp
	rm -rf "$tmp"
	NGINX_DONE=1
}

nginx_server_conf() {
	cat <<EOF
server {
	listen $1;
	server_name localhost;
	location / {
		root /usr/share/nginx/html;
		index index.html index.htm;
	}
}
EOF
}

# critest's host-network web server: the same nginx, listening on 12003.
build_hostnet_nginx() {
	build_nginx
	local r
	r="$(new_rootfs hostnet)"
	mkdir -p "$r/etc/nginx/conf.d"
	nginx_server_conf 12003 >"$r/etc/nginx/conf.d/default.conf"
	add_layer nginx hostnet-layer "$r" "nginx listens on 12003"
	derive hostnet-layer hostnet_nginx --clear config.exposedports --config.exposedports 12003/tcp
}

# A web server on port 80 whose log names it (critest greps the container log for
# "httpd" and execs echo in it): busybox httpd behind a start-up line.
build_httpd() {
	build_base
	local r
	r="$(new_rootfs httpd)"
	mkdir -p "$r/usr/local/bin" "$r/htdocs"
	cat >"$r/usr/local/bin/httpd-foreground" <<'EOF'
#!/bin/sh
# berth test image: busybox httpd in the foreground on port 80.
echo "httpd: serving /htdocs on port 80"
exec httpd -f -v -p 80 -h /htdocs
EOF
	chmod 755 "$r/usr/local/bin/httpd-foreground"
	printf '<html><body><h1>It works!</h1></body></html>\n' >"$r/htdocs/index.html"
	add_layer base httpd-layer "$r" "busybox httpd on port 80"
	derive httpd-layer httpd --config.cmd httpd-foreground --config.exposedports 80/tcp
}

# critest runs it as uid 1000 with and without no_new_privs and reads its output.
build_nonewprivs() {
	build_base
	local r
	r="$(new_rootfs nonewprivs)"
	mkdir -p "$r/usr/local/bin"
	compile nnp
	cp "$WORK/bin/nnp" "$r/usr/local/bin/nnp"
	chmod 4755 "$r/usr/local/bin/nnp"
	add_layer base nonewprivs-layer "$r" "setuid-root nnp"
	derive nonewprivs-layer nonewprivs --config.cmd /usr/local/bin/nnp
}

# critest's image-user images: busybox with only USER changed.
build_user_uid() { build_base && derive base user_uid --config.user 1002; }
build_user_username() { build_base && derive base user_username --config.user www-data; }
build_user_uid_group() { build_base && derive base user_uid_group --config.user 1003:1004; }
build_user_username_group() { build_base && derive base user_username_group --config.user www-data:1004; }

# default-user (1000, primary group 1000) is also a member of
# group-defined-in-image (50000); the image runs as 1000.
build_predefined_group() {
	build_base
	local r
	r="$(new_rootfs predefined-group)"
	mkdir -p "$r/etc" "$r/home/default-user"
	cp "$ROOTFS/base/etc/passwd" "$ROOTFS/base/etc/group" "$r/etc/"
	echo "default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh" >>"$r/etc/passwd"
	printf 'default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n' >>"$r/etc/group"
	chown 1000:1000 "$r/home/default-user"
	add_layer base predefined-group-layer "$r" "default-user in group-defined-in-image"
	derive predefined-group-layer predefined_group --config.user 1000
}

# marker_image TAG FILE: busybox plus an empty /FILE, so that images built with
# different FILEs differ (critest's image-test images are made the same way).
marker_image() {
	build_base
	local r
	r="$(new_rootfs "$1")"
	: >"$r/$2"
	add_layer base "$1" "$r" "marker /$2"
}
build_test_image_1() { marker_image test_image_1 test-image-1; }
build_test_image_2() { marker_image test_image_2 test-image-2; }
build_test_image_3() { marker_image test_image_3 test-image-3; }
build_test_image_latest() { marker_image test_image_latest test-image-latest; }
build_test_image_digest() { marker_image test_image_digest test-image-digest; }
build_test_image_tags() { marker_image test_image_tags same-image; }
build_test_image_tag_test() { marker_image test_image_tag_test test; }
build_test_image_tag_all() { marker_image test_image_tag_all all; }

# A static pause, alone in its image, running as 65535 like upstream's.
build_pause() {
	local r
	r="$(new_rootfs pause)"
	compile pause
	cp "$WORK/bin/pause" "$r/pause"
	new_image pause-scratch
	add_layer pause-scratch pause-layer "$r" "static pause"
	derive pause-layer pause --clear config.env --config.entrypoint /pause --config.user 65535:65535
}

# berth-test/layers:v1, for the unpacker's tests. Four layers:
#   1. the busybox base
#   2. /layers: keep.txt, gone.txt, gone-dir/{a.txt,sub/b.txt}, opaque/{old.txt,old-dir/c.txt},
#      replaced.txt ("layer 2")
#   3. whiteouts .wh.gone.txt and .wh.gone-dir; opaque/.wh..wh..opq with opaque/new.txt;
#      replaced.txt ("layer 3"); symlink -> keep.txt; hardlink-a and hardlink-b (one inode)
#   4. fifo; xattr.txt with user.berth=1; setuid (mode 4755)
# Resulting /layers: keep.txt replaced.txt opaque/new.txt symlink hardlink-a hardlink-b
# fifo xattr.txt setuid, and no gone.txt, gone-dir, opaque/old.txt or opaque/old-dir.
build_layers() {
	build_base
	local r
	r="$(new_rootfs layers-1)/layers"
	mkdir -p "$r/gone-dir/sub" "$r/opaque/old-dir"
	echo "kept from layer 2" >"$r/keep.txt"
	echo "deleted by layer 3" >"$r/gone.txt"
	echo a >"$r/gone-dir/a.txt"
	echo b >"$r/gone-dir/sub/b.txt"
	echo old >"$r/opaque/old.txt"
	echo c >"$r/opaque/old-dir/c.txt"
	echo "layer 2" >"$r/replaced.txt"
	add_layer base layers-1 "${r%/layers}" "berth-test layers: files"

	r="$(new_rootfs layers-2)/layers"
	mkdir -p "$r/opaque"
	: >"$r/.wh.gone.txt"
	: >"$r/.wh.gone-dir"
	: >"$r/opaque/.wh..wh..opq"
	echo new >"$r/opaque/new.txt"
	echo "layer 3" >"$r/replaced.txt"
	ln -s keep.txt "$r/symlink"
	echo "one inode, two names" >"$r/hardlink-a"
	ln "$r/hardlink-a" "$r/hardlink-b"
	add_layer layers-1 layers-2 "${r%/layers}" "berth-test layers: whiteouts, opaque dir, links"

	r="$(new_rootfs layers-3)/layers"
	mkdir -p "$r"
	mkfifo "$r/fifo"
	echo "has user.berth=1" >"$r/xattr.txt"
	setfattr -n user.berth -v 1 "$r/xattr.txt" ||
		berth_die "cannot set a user xattr under $WORK (filesystem without user xattrs?)"
	printf '#!/bin/sh\necho setuid\n' >"$r/setuid"
	chmod 4755 "$r/setuid"
	add_layer layers-2 layers-3 "${r%/layers}" "berth-test layers: fifo, xattr, setuid"
	derive layers-3 layers
}

# berth-bench/big:v1: 8 layers of 5 files x 5 MiB. The bytes are AES-CTR keystream
# under fixed keys: incompressible like real binaries, yet identical on every build.
build_bench() {
	local layer file r from=bench-scratch
	new_image bench-scratch
	for layer in 1 2 3 4 5 6 7 8; do
		r="$(new_rootfs "bench-$layer")"
		mkdir -p "$r/bench/layer-$layer"
		for file in 1 2 3 4 5; do
			head -c 5242880 /dev/zero |
				openssl enc -aes-128-ctr -nosalt \
					-K "$(printf '%032x' $((layer * 16 + file)))" -iv 00000000000000000000000000000000 \
					>"$r/bench/layer-$layer/data-$file.bin"
		done
		add_layer "$from" "bench-$layer" "$r" "bench layer $layer"
		rm -rf "$r"
		from="bench-$layer"
	done
	derive "$from" bench --config.cmd /bin/true
}

# ---------------------------------------------------------------- main

# ref_digest REF: the manifest digest the registry serves for REF.
ref_digest() {
	registry_manifest "$1" -I | tr -d '\r' | awk 'tolower($1) == "docker-content-digest:" { print $2 }'
}

list_refs() {
	local entry ref manifest words
	for entry in "${IMAGES[@]}" "${BENCH_IMAGES[@]}"; do
		read -r -a words <<<"$entry"
		for ref in "${words[@]:1}"; do
			if manifest="$(registry_manifest "$ref")"; then
				printf '%s/%s manifest %s image-id %s\n' "$(ref_registry "$ref")" "$(ref_path "$ref")" \
					"$(ref_digest "$ref")" "$(jq -r .config.digest <<<"$manifest")"
			else
				printf '%s/%s absent\n' "$(ref_registry "$ref")" "$(ref_path "$ref")"
			fi
		done
	done
}

force=""
what=all
for arg in "$@"; do
	case "$arg" in
	--force) force=1 ;;
	all | bench | list) what="$arg" ;;
	*)
		echo "usage: $0 [--force] [all|bench|list]" >&2
		exit 2
		;;
	esac
done

berth_need_root
berth_need_cmds umoci skopeo jq curl gcc busybox tar dpkg-deb apt-get setfattr openssl ldd flock
# Start the registries when they are not up (a no-op otherwise).
if ! out="$("$BERTH_REPO_ROOT/hack/registry.sh" start 2>&1)"; then
	printf '%s\n' "$out" >&2
	berth_die "the local registries could not be started"
fi

if [[ $what == list ]]; then
	list_refs
	exit 0
fi
if [[ $what == bench ]]; then entries=("${BENCH_IMAGES[@]}"); else entries=("${IMAGES[@]}"); fi

mkdir -p "$BERTH_TEST_DIR"
# One build at a time: concurrent runs would share $WORK.
exec 9>"$BERTH_TEST_DIR/test-images.lock"
flock -w 600 9 || berth_die "another hack/test-images.sh holds $BERTH_TEST_DIR/test-images.lock"

# Everything, when this script or the packages it copies changed since the last
# successful run; otherwise only the images of which a reference is missing.
stamp="$BERTH_TEST_DIR/test-images-$what.stamp"
want_stamp="$(fixture_hash)"
[[ $(cat "$stamp" 2>/dev/null) == "$want_stamp" ]] || force=1
todo=()
for entry in "${entries[@]}"; do
	read -r -a words <<<"$entry"
	for ref in "${words[@]:1}"; do
		if [[ -n $force ]] || ! ref_present "$ref"; then
			todo+=("$entry")
			break
		fi
	done
done
if ((${#todo[@]} == 0)); then
	berth_log "all ${#entries[@]} images up to date in the registry"
	exit 0
fi

rm -rf "$WORK"
mkdir -p "$WORK"
umoci init --layout "$LAYOUT"
write_sources
for entry in "${todo[@]}"; do
	read -r -a words <<<"$entry"
	builder="${words[0]}"
	"build_$builder"
	finalize "$builder"
	# The first push uploads the blobs. The other names then go in parallel, one job
	# per repository: the registry fails concurrent writes into one repository (it
	# reads link files that another request is still writing).
	push_ref "$builder" "${words[1]}" || berth_die "pushing ${words[1]} failed"
	declare -A by_repo=()
	for ref in "${words[@]:2}"; do
		by_repo["${ref%:*}"]+="$ref "
	done
	pids=()
	for repo in "${!by_repo[@]}"; do
		(
			for ref in ${by_repo[$repo]}; do
				push_ref "$builder" "$ref" || exit 1
			done
		) &
		pids+=($!)
	done
	for pid in "${pids[@]}"; do
		wait "$pid" || berth_die "pushing $builder failed"
	done
	unset by_repo
	berth_log "pushed ${words[*]:1}"
done
rm -rf "$WORK"
echo "$want_stamp" >"$stamp"
berth_log "done: ${#todo[@]} of ${#entries[@]} images built and pushed"
