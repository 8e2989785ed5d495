#!/bin/sh
# Install the Debian packages that ferry's build, tests and demo use, when
# any is missing. Quiet when everything is present.
set -eu

packages="clang-19 llvm-19 libbpf-dev linux-libc-dev bpftool iproute2 iptables
iputils-ping iperf3 tcpdump netcat-openbsd containerd runc containernetworking-plugins
busybox-static util-linux traceroute ethtool qemu-system-x86 kmod cpio"

missing=""
for pkg in $packages; do
	status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
	case "$status" in
	*"install ok installed"*) ;;
	*) missing="$missing $pkg" ;;
	esac
done

if [ -n "$missing" ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "missing Debian packages:$missing; run 'make deps' as root" >&2
		exit 1
	fi
	echo "installing Debian packages:$missing"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# The programs pin their maps under /sys/fs/bpf; systemd mounts it on most
# hosts, a bare VM or container may not.
if [ "$(id -u)" -eq 0 ] && ! mountpoint -q /sys/fs/bpf; then
	mount -t bpf bpf /sys/fs/bpf
fi
