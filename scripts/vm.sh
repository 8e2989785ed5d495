#!/bin/bash
# Boot Linux kernels under qemu and run ferry's privileged tests inside them,
# so that the attach path without tcx, older verifiers and nf_conntrack as a
# module are tested for real. qemu emulates the CPU (TCG) and needs no KVM.
# The tests run as root inside the VM, with the host's /usr and /etc shared
# read-only, so the host must be x86-64 Debian with the packages of 'make deps'.
#
# KERNEL lists the kernels to test, separated by spaces:
#   debian-6.1 (the default)  Debian 12's kernel: the newest package
#                             linux-image-6.1.0-N-amd64 that apt can download
#   debian-X.Y                the newest linux-image-X.Y.N+debN-amd64 or
#                             linux-image-X.Y.0-N-amd64, e.g. debian-6.12
#   linux-image-NAME          that Debian package
#   /path/to/vmlinuz          a kernel image, with its modules in MODULES
#                             (default /lib/modules/RELEASE); without modules,
#                             everything the tests need must be built in
# VM_E2E is the -test.run pattern of the end-to-end tests (default
# 'TestFerryChecks/clsact|TestFerrySameNode', about a minute under TCG).
# VM_BROKEN=1 also loads test/vm/testdata/broken.c, which the verifier
# rejects: the run then fails and shows the verifier's log.
# VM_TIMEOUT bounds each boot in seconds (default 900). VM_CACHE is where
# kernel packages are kept (default .cache/vm). VM_KEEP=1 keeps the run
# directory with the logs.
#
# The VM has no network device. Its tests build their own namespaces.
set -euo pipefail
# modprobe and depmod live in /usr/sbin, which a user's PATH may lack.
PATH=$PATH:/usr/sbin:/sbin

root=$(cd "$(dirname "$0")/.." && pwd)
kernels=${KERNEL:-debian-6.1}
cache=${VM_CACHE:-$root/.cache/vm}
timeout_s=${VM_TIMEOUT:-900}
broken=${VM_BROKEN:-0}
busybox=/bin/busybox

log() {
	echo "vm: $*" >&2
}

die() {
	log "$*"
	exit 1
}

need() {
	command -v "$1" >/dev/null || die "missing $1 ($2); run 'make deps' as root"
}

check_tools() {
	[ "$(uname -m)" = x86_64 ] || die "the VM runs the host's x86-64 binaries; this is $(uname -m)"
	need qemu-system-x86_64 "Debian package qemu-system-x86"
	need modprobe "Debian package kmod"
	need depmod "Debian package kmod"
	need cpio "Debian package cpio"
	need flock "Debian package util-linux"
	need go "the Go toolchain"
	if [ "$broken" = 1 ]; then
		need clang-19 "Debian package clang-19"
	fi
	# The initramfs runs busybox before any library is there.
	if ! dpkg -L busybox-static 2>/dev/null | grep -qx "$busybox"; then
		die "missing a static busybox (Debian package busybox-static); run 'make deps' as root"
	fi
}

# candidate_version NAME prints the version of package NAME that apt would
# download, or nothing. Under pipefail, no reader here may stop early: the
# writer would fail with SIGPIPE.
candidate_version() {
	apt-cache show --no-all-versions "$1" 2>/dev/null |
		awk '$1 == "Version:" && version == "" { version = $2 } END { print version }'
}

# newest_package PREFIX REGEX prints the newest package whose name starts with
# PREFIX and matches REGEX, and that apt can download.
newest_package() {
	local prefix=$1 regex=$2 pkg
	for pkg in $(apt-cache pkgnames "$prefix" | grep -E "$regex" | sort -rV); do
		if [ -n "$(candidate_version "$pkg")" ]; then
			echo "$pkg"
			return 0
		fi
	done
	return 1
}

# fetch_package NAME extracts the Debian package NAME into the cache once,
# generates its modules.dep and prints the extracted directory.
fetch_package() {
	local pkg=$1 version dir tmp release
	version=$(candidate_version "$pkg")
	[ -n "$version" ] || die "package $pkg not found in apt's lists; run 'apt-get update' as root"
	dir="$cache/kernel/${pkg}_$version"
	# Another run may be extracting the same package. Callers run this function
	# in a command substitution, whose exit releases the lock.
	mkdir -p "$cache/kernel"
	exec 9>"$cache/kernel/.lock"
	flock 9
	if [ -e "$dir/.complete" ]; then
		echo "$dir"
		return
	fi

	log "downloading $pkg $version"
	rm -rf "$dir"
	tmp=$(mktemp -d "$cache/download.XXXXXX")
	if ! (cd "$tmp" && apt-get download -q "$pkg=$version" >apt.log 2>&1); then
		cat "$tmp/apt.log" >&2
		rm -rf "$tmp"
		die "apt-get download $pkg=$version failed"
	fi
	mkdir -p "$dir"
	dpkg-deb -x "$tmp"/*.deb "$dir"
	rm -rf "$tmp"
	release=$(ls "$dir/lib/modules")
	depmod -b "$dir" "$release"
	touch "$dir/.complete"
	echo "$dir"
}

# image_release prints the release string from the header of a bzImage.
image_release() {
	local image=$1 offset
	if [ "$(dd if="$image" bs=1 skip=514 count=4 2>/dev/null)" != HdrS ]; then
		die "$image is not a bzImage kernel"
	fi
	offset=$(od -An -j 526 -N 2 -t u2 "$image" | tr -d ' ')
	dd if="$image" bs=1 skip=$((offset + 512)) count=200 2>/dev/null |
		tr '\0' '\n' | awk 'NR == 1 { print $1 }'
}

# resolve_kernel NAME sets image, release, moddir (empty without modules)
# and modroot, the directory whose lib/modules/RELEASE is moddir.
resolve_kernel() {
	local name=$1 pkg="" series
	case "$name" in
	debian-*)
		series=${name#debian-}
		pkg=$(newest_package "linux-image-$series" \
			"^linux-image-${series//./\\.}(\\.0-[0-9]+|\\.[0-9]+\\+deb[0-9]+)-amd64\$") ||
			die "no kernel package for $name in apt's lists; run 'apt-get update' as root"
		;;
	linux-image-*)
		pkg=$name
		;;
	*)
		[ -f "$name" ] || die "KERNEL entry $name is neither a Debian package nor a file"
		;;
	esac

	if [ -n "$pkg" ]; then
		modroot=$(fetch_package "$pkg")
		release=$(ls "$modroot/lib/modules")
		image="$modroot/boot/vmlinuz-$release"
		moddir="$modroot/lib/modules/$release"
		return
	fi

	image=$name
	release=$(image_release "$image")
	moddir=${MODULES:-/lib/modules/$release}
	modroot=""
	if [ ! -d "$moddir" ]; then
		log "no modules at $moddir: the kernel must have virtio-pci, 9p, veth, clsact," \
			"cls_bpf and netfilter built in"
		moddir=""
		return
	fi
	modroot="$run/modroot-$release"
	mkdir -p "$modroot/lib/modules"
	ln -sfn "$moddir" "$modroot/lib/modules/$release"
}

build_binaries() {
	log "building static test binaries"
	cd "$root"
	export CGO_ENABLED=0
	go build -o "$run/bin/" ./cmd/ferry ./cmd/ferryd ./cmd/ferryctl
	go test -c -o "$run/bin/datapath.test" ./pkg/datapath
	go test -c -o "$run/bin/e2e.test" ./test/e2e
	if [ "$broken" = 1 ]; then
		go test -c -o "$run/bin/vm.test" ./test/vm
		clang-19 -target bpf -O2 -g -Wall -I/usr/include/x86_64-linux-gnu \
			-c test/vm/testdata/broken.c -o "$run/bin/broken.o"
	fi
	cp test/vm/tests.sh "$run/tests.sh"
}

# copy_module PATH DIR copies a kernel module into DIR, decompressed so that
# busybox's insmod loads it, and prints its new name.
copy_module() {
	local path=$1 dir=$2 name
	name=$(basename "$path")
	case "$name" in
	*.ko.xz) xz -dc "$path" >"$dir/${name%.xz}" ;;
	*.ko.zst) zstd -qdc "$path" >"$dir/${name%.zst}" ;;
	*.ko.gz) gzip -dc "$path" >"$dir/${name%.gz}" ;;
	*) cp "$path" "$dir/" ;;
	esac
	echo "${name%.ko*}.ko"
}

# build_initramfs DIR writes DIR.cpio: busybox, the init scripts and the
# modules that mounting 9p needs. /bin, /sbin and /lib point into /usr, as
# on Debian, and /usr comes from the host.
build_initramfs() {
	local dir=$1 path
	mkdir -p "$dir"/{vm/modules,vm/kernel,proc,sys,dev,run,tmp,var,root,usr,etc,ferry}
	for path in bin sbin lib lib64; do
		ln -s "usr/$path" "$dir/$path"
	done
	cp "$busybox" "$dir/vm/busybox"
	install -m 0755 "$root/test/vm/init.sh" "$dir/init"
	install -m 0755 "$root/test/vm/modprobe.sh" "$dir/vm/modprobe"
	: >"$dir/vm/modules/order"
	if [ -n "$moddir" ]; then
		# Lines are "insmod PATH" or "builtin NAME", and a module may appear twice.
		modprobe -d "$modroot" -S "$release" --show-depends -a virtio_pci 9pnet_virtio 9p |
			awk '$1 == "insmod" && !seen[$2]++ { print $2 }' |
			while read -r path; do
				copy_module "$path" "$dir/vm/modules" >>"$dir/vm/modules/order"
			done
	fi
	(cd "$dir" && find . | cpio -o -H newc --quiet) >"$dir.cpio"
}

# strip_console removes SeaBIOS's terminal escapes and the carriage returns
# of the serial console.
strip_console() {
	sed -u -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1b[c78]//g' -e 's/\r//g'
}

# boot NAME runs the tests on one kernel and returns their exit status.
boot() {
	local name=$1 start end out rc=0 status
	start=$(date +%s)
	resolve_kernel "$name"
	log "Linux $release from $image"
	out="out/$release"
	mkdir -p "$run/$out"
	build_initramfs "$run/initramfs-$release"
	{
		echo "FERRY_VM_OUT=$out"
		echo "FERRY_VM_MODULES=$([ -n "$moddir" ] && echo 1 || echo 0)"
		echo "FERRY_VM_BROKEN=$broken"
		if [ -n "${VM_E2E:-}" ]; then
			echo "FERRY_VM_E2E='${VM_E2E//\'/}'"
		fi
	} >"$run/vm.env"

	local share=security_model=none,multidevs=remap
	local args=(
		-accel tcg -m 2G -smp 2 -nographic -no-reboot -nic none
		-kernel "$image" -initrd "$run/initramfs-$release.cpio"
		-append "console=ttyS0 panic=-1 loglevel=4"
		-virtfs "local,path=/usr,mount_tag=usr,readonly=on,$share"
		-virtfs "local,path=/etc,mount_tag=etc,readonly=on,$share"
		-virtfs "local,path=$run,mount_tag=run,$share"
	)
	if [ -n "$moddir" ]; then
		args+=(-virtfs "local,path=$moddir,mount_tag=kmod,readonly=on,$share")
	fi

	log "booting Linux $release (limit $timeout_s s)"
	timeout "$timeout_s" qemu-system-x86_64 "${args[@]}" </dev/null |
		strip_console | tee "$run/$out/console.txt" || rc=$?
	end=$(date +%s)

	if [ "$rc" = 124 ]; then
		log "Linux $release: the VM did not finish within $timeout_s s (VM_TIMEOUT)"
		return 1
	fi
	if [ "$rc" != 0 ]; then
		log "Linux $release: qemu failed with exit status $rc"
		return 1
	fi
	# The status file is missing when the run share could not be mounted.
	if [ -s "$run/$out/status" ]; then
		status=$(cat "$run/$out/status")
	else
		status=$(sed -n 's/^ferry-vm: exit status \([0-9]*\)$/\1/p' "$run/$out/console.txt" |
			tail -n 1)
	fi
	if [ -z "$status" ]; then
		log "Linux $release: the VM stopped without a test result; see its console above"
		return 1
	fi
	log "Linux $release: tests exited with status $status after $((end - start)) s"
	[ "$status" = 0 ]
}

check_tools
mkdir -p "$cache"
run=$(mktemp -d "$cache/run.XXXXXX")
cleanup() {
	if [ "${VM_KEEP:-0}" = 1 ]; then
		log "kept $run"
	else
		rm -rf "$run"
	fi
}
trap cleanup EXIT
mkdir -p "$run/bin"

start=$(date +%s)
(build_binaries)
log "built the binaries in $(($(date +%s) - start)) s"

failed=""
for name in $kernels; do
	# errexit stays on inside boot only when its call is no operand of || or &&.
	set +e
	(
		set -e
		boot "$name"
	)
	rc=$?
	set -e
	if [ "$rc" != 0 ]; then
		failed="$failed $name"
	fi
done
total=$(($(date +%s) - start))

# One line with the top-level Go tests of all kernels, counted in the form
# that test runners print.
count() {
	cat "$run"/out/*/*.log 2>/dev/null | grep -c "^--- $1:" || true
}
echo "vm: $(count PASS) passed, $(count FAIL) failed, $(count SKIP) skipped"
if [ -n "$failed" ]; then
	die "failed on:$failed (total $total s)"
fi
log "passed on: $kernels (total $total s)"
