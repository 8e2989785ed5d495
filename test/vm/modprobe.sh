#!/vm/busybox sh
# The kernel's modprobe helper in the test VM (/proc/sys/kernel/modprobe).
# The host's kmod loads modules from the kernel's own tree on the kmod share,
# mounted under /vm/kernel, because the host's /lib/modules belongs to another
# kernel.
exec /usr/sbin/modprobe -d /vm/kernel "$@"
