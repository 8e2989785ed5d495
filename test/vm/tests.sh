# The tests that the VM runs. /init runs this file with busybox sh in /ferry,
# the run share, where bin/ contains the binaries that scripts/vm.sh built.
# Each suite's output goes to the console and to $FERRY_VM_OUT/SUITE.log.
# The exit status is 0 when every suite passed.

# busybox sh prefers its own applets for names such as ip and modprobe, so
# the host's tools are called by path.
bb=/vm/busybox

failed=""
summary=""

now() {
	$bb cut -d ' ' -f 1 /proc/uptime
}

# suite NAME COMMAND... runs COMMAND as one suite and records its result.
suite() {
	name=$1
	shift
	echo "ferry-vm: === suite $name: $*"
	start=$(now)
	{
		"$@"
		echo $? >"$FERRY_VM_OUT/$name.rc"
	} 2>&1 | $bb tee "$FERRY_VM_OUT/$name.log"
	rc=$($bb cat "$FERRY_VM_OUT/$name.rc")
	took=$($bb awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
	result=ok
	if [ "$rc" != 0 ]; then
		result="FAIL (exit status $rc)"
		failed="$failed $name"
	fi
	echo "ferry-vm: --- suite $name: $result in $took s"
	summary="$summary$(printf '  %-22s %-24s %8s s' "$name" "$result" "$took")
"
}

gotest() {
	binary=$1
	shift
	"bin/$binary" -test.v -test.count=1 -test.timeout=10m "$@"
}

# ferryd_without_conntrack starts ferryd on a dummy uplink and expects it to
# exit with an error that contains the command which loads nf_conntrack.
ferryd_without_conntrack() {
	dir=/tmp/ferryd-check
	$bb mkdir -p "$dir/net.d"
	/usr/bin/ip link add ferrycheck0 type dummy &&
		/usr/bin/ip addr add 10.0.1.20/24 dev ferrycheck0 &&
		/usr/bin/ip link set ferrycheck0 up || return 1

	$bb cat >"$dir/ferryd.yaml" <<-EOF
		nodeName: vm
		device: ferrycheck0
		clusterCIDR: 10.200.0.0/16
		nodes:
		  - {name: vm, ip: 10.0.1.20, podCIDR: 10.200.0.0/24}
		bpffsDir: /sys/fs/bpf/ferryd-check
		cni:
		  binDir: /ferry/bin
		  confDir: $dir/net.d
	EOF
	out=$($bb timeout 60 bin/ferryd --config "$dir/ferryd.yaml" 2>&1)
	rc=$?
	echo "$out"
	/usr/bin/ip link del ferrycheck0
	$bb rm -rf /sys/fs/bpf/ferryd-check

	if [ "$rc" = 0 ]; then
		echo "ferryd exited with status 0, want an error"
		return 1
	fi
	case "$out" in
	*"modprobe nf_conntrack"*) return 0 ;;
	esac
	echo "ferryd's error does not say how to load nf_conntrack"
	return 1
}

# Before nf_conntrack is loaded, the loader and ferryd must name the missing
# kfuncs. On kernels with nf_conntrack built in, the Go tests check that the
# kfuncs are found, and the ferryd check is skipped.
suite loader-no-conntrack gotest datapath.test -test.run 'TestCheckKernel|TestLoadWithoutConntrack'
if [ ! -e /sys/module/nf_conntrack ]; then
	suite ferryd-no-conntrack ferryd_without_conntrack
fi

# On a Kubernetes node, kube-proxy's rules load nf_conntrack, whose kfuncs
# ferry's programs need.
if ! /vm/modprobe nf_conntrack; then
	echo "ferry-vm: modprobe nf_conntrack failed"
	failed="$failed modprobe"
fi

# Every privileged test of the loader, the attachment and the programs on
# crafted packets.
suite datapath gotest datapath.test

# The lab: two nodes on one subnet and one on another. TestFerryChecks/clsact
# covers cross-node ping with its reply TTL and masquerading to the internet
# stand-in. TestFerrySameNode runs ferryd in its default attach mode, which
# must pick what the kernel supports. FERRY_VM_E2E replaces the pattern.
suite e2e env FERRY_BIN_DIR=/ferry/bin \
	bin/e2e.test -test.v -test.count=1 -test.timeout=10m \
	-test.run "${FERRY_VM_E2E:-TestFerryChecks/clsact|TestFerrySameNode}"

if [ "${FERRY_VM_BROKEN:-0}" = 1 ]; then
	suite broken-program env FERRY_VM_BROKEN_OBJ=/ferry/bin/broken.o \
		bin/vm.test -test.v -test.count=1 -test.run TestBrokenProgramLoads
fi

echo "ferry-vm: summary on Linux $($bb uname -r):"
printf '%s' "$summary"
if [ -n "$failed" ]; then
	echo "ferry-vm: failed:$failed"
	exit 1
fi
exit 0
