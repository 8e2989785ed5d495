#!/vm/busybox sh
# /init of the test VM that scripts/vm.sh boots. The initramfs contains
# busybox, this script and the modules that mounting 9p needs. The host's
# /usr and /etc come read-only over 9p, so the tests run the same ip,
# nsenter, iptables, ping, tc, bpftool and CNI plugins as on the host. The
# run share, mounted on /ferry, contains the test binaries and receives the
# logs and the exit status in $FERRY_VM_OUT.
#
# The last line on the console is "ferry-vm: exit status N". scripts/vm.sh
# reads N from $FERRY_VM_OUT/status, or from that line when the run share
# could not be mounted.

bb=/vm/busybox

# The initramfs has no /dev/console for the kernel to open, so output goes to
# the console only once devtmpfs is mounted.
$bb mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

finish() {
	echo "ferry-vm: exit status $1"
	if [ -n "${FERRY_VM_OUT:-}" ] && [ -d "/ferry/$FERRY_VM_OUT" ]; then
		echo "$1" >"/ferry/$FERRY_VM_OUT/status"
	fi
	$bb sync
	$bb poweroff -f
}

fail() {
	echo "ferry-vm: $*"
	finish 125
}

$bb mount -t proc proc /proc || fail "mount /proc failed"
$bb mount -t sysfs sysfs /sys || fail "mount /sys failed"
echo "ferry-vm: userspace reached after $($bb cut -d ' ' -f 1 /proc/uptime) s" \
	"on Linux $($bb uname -r)"

# Modules for virtio-pci and 9p in dependency order. The list is empty when
# the kernel has them built in.
while read -r module; do
	$bb insmod "/vm/modules/$module" || fail "insmod $module failed"
done </vm/modules/order

mount9p() {
	# 9p's default msize of 8 KiB makes every exec of a test binary slow.
	$bb mount -t 9p -o "trans=virtio,version=9p2000.L,msize=524288,$3" "$1" "$2" ||
		fail "mount 9p share $1 on $2 failed"
}
mount9p usr /usr ro,cache=loose
mount9p etc /etc ro,cache=loose
mount9p run /ferry rw,cache=none

# scripts/vm.sh writes FERRY_VM_OUT, FERRY_VM_MODULES (1 when the kmod share
# exists), FERRY_VM_BROKEN and FERRY_VM_E2E into vm.env.
set -a
# shellcheck source=/dev/null
. /ferry/vm.env
set +a

for dir in /run /tmp /var /root; do
	$bb mount -t tmpfs tmpfs "$dir" || fail "mount tmpfs on $dir failed"
done
$bb ln -s /run /var/run
$bb mkdir -p /var/lib /var/tmp
$bb mount -t bpf bpf /sys/fs/bpf || fail "mount bpffs failed"
$bb mount -t debugfs debugfs /sys/kernel/debug || fail "mount debugfs failed"
$bb mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "mount cgroup2 failed"

# The kernel runs /vm/modprobe to load modules on demand: veth, sch_ingress,
# cls_bpf, nf_tables and the others that the tests use.
if [ "${FERRY_VM_MODULES:-0}" = 1 ]; then
	moddir="/vm/kernel/lib/modules/$($bb uname -r)"
	$bb mkdir -p "$moddir"
	mount9p kmod "$moddir" ro,cache=loose
	echo /vm/modprobe >/proc/sys/kernel/modprobe
fi

$bb hostname ferry-vm
$bb ip link set lo up

export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp
cd /ferry || fail "cd /ferry failed"
$bb sh /ferry/tests.sh
finish $?
