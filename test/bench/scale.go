package main

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/ferrynet/ferry/pkg/datapath"
	"github.com/ferrynet/ferry/test/lab"
)

// Sizes of the scale cases.
const (
	extraNodes = 5000
	// extraNATFlows flows make 100,000 NAT entries, one per direction.
	extraNATFlows = 50000
)

// Names of ferry's programs under <bpffs dir>/progs, as pkg/datapath pins them.
const (
	progFromPod       = "from_pod"
	progUplinkIngress = "uplink_ingress"
	progUplinkEgress  = "uplink_egress"
)

// extraNodeIP returns the node IP of extra node i: 10.1.0.1 and up, 250 per /24, outside
// the lab's node subnets, so no packet is ever sent there.
func extraNodeIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 1, byte(i / 250), byte(i%250 + 1)})
}

// extraPodCIDR returns the pod range of extra node i: the /24s from 10.201.0.0 on, inside
// clusterCIDR and apart from the lab's ranges in 10.200.0.0/16.
func extraPodCIDR(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(201 + i/256), byte(i % 256), 0}),
		24)
}

// extraRoutes returns the node routes of the extra nodes.
func extraRoutes() []datapath.NodeRoute {
	routes := make([]datapath.NodeRoute, extraNodes)
	for i := range routes {
		routes[i] = datapath.NodeRoute{PodCIDR: extraPodCIDR(i), NodeIP: extraNodeIP(i)}
	}
	return routes
}

// extraNodeLines returns the first count extra nodes as entries of ferryd's static node
// list.
func extraNodeLines(count int) []string {
	lines := make([]string, count)
	for i := range lines {
		lines[i] = fmt.Sprintf("  - {name: extra-%04d, ip: %s, podCIDR: %s}\n", i,
			extraNodeIP(i), extraPodCIDR(i))
	}
	return lines
}

// extraNATEntries returns both entries of extraNATFlows TCP flows from podIP, masqueraded
// to nodeIP, to port 443 of 198.51.100.100 to 198.51.100.199, 500 flows per address. No
// packet belongs to them: the lab sends nothing to those addresses. Their last use is now,
// so ferryd's expiry keeps them for the 2 hours of an established TCP flow.
func extraNATEntries(podIP, nodeIP netip.Addr) []datapath.NATEntry {
	now := monotonicNow()
	entries := make([]datapath.NATEntry, 0, 2*extraNATFlows)
	for i := range extraNATFlows {
		remote := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(100 + i/500)}),
			443)
		port := uint16(10000 + i%500)
		pod := netip.AddrPortFrom(podIP, port)
		node := netip.AddrPortFrom(nodeIP, port)
		entries = append(entries,
			datapath.NATEntry{Proto: unix.IPPROTO_TCP, Direction: datapath.NATEgress,
				Src: pod, Dst: remote, TranslateTo: node, Created: now, LastSeen: now},
			datapath.NATEntry{Proto: unix.IPPROTO_TCP, Direction: datapath.NATIngress,
				Src: remote, Dst: node, TranslateTo: pod, Created: now, LastSeen: now})
	}
	return entries
}

func monotonicNow() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// progStats are the kernel's run statistics of BPF programs, summed.
type progStats struct {
	runs    uint64
	runtime time.Duration
}

func (s progStats) sub(o progStats) progStats {
	return progStats{runs: s.runs - o.runs, runtime: s.runtime - o.runtime}
}

// readProgStats sums the statistics of the named programs pinned on the nodes. The kernel
// counts only while statistics are enabled (ebpf.EnableStats).
func readProgStats(nodes []*lab.Node, names ...string) (progStats, error) {
	var sum progStats
	for _, n := range nodes {
		for _, name := range names {
			path := filepath.Join(n.BPFFSDir(), "progs", name)
			prog, err := ebpf.LoadPinnedProgram(path, nil)
			if err != nil {
				return sum, fmt.Errorf("open pinned program %s: %w", path, err)
			}
			stats, err := prog.Stats()
			prog.Close()
			if err != nil {
				return sum, fmt.Errorf("read statistics of program %s: %w", path, err)
			}
			sum.runs += stats.RunCount
			sum.runtime += stats.Runtime
		}
	}
	return sum, nil
}

// measureProgs enables the kernel's BPF run-time statistics while fn runs and returns the
// change of the statistics of the named programs on the nodes. The statistics cost every
// BPF program on the host two clock reads per run, so only these runs have them on.
func measureProgs(nodes []*lab.Node, names []string, fn func() error) (progStats, error) {
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return progStats{}, fmt.Errorf("enable BPF run-time statistics: %w", err)
	}
	defer stats.Close()
	before, err := readProgStats(nodes, names...)
	if err != nil {
		return progStats{}, err
	}
	if err := fn(); err != nil {
		return progStats{}, err
	}
	after, err := readProgStats(nodes, names...)
	if err != nil {
		return progStats{}, err
	}
	return after.sub(before), nil
}

// withProgStats runs fn with measureProgs and returns the mean run time of the programs
// per run, in nanoseconds.
func withProgStats(nodes []*lab.Node, names []string, fn func() error) (float64, error) {
	d, err := measureProgs(nodes, names, fn)
	if err != nil {
		return 0, err
	}
	if d.runs == 0 {
		return 0, fmt.Errorf("programs %v on %d nodes did not run", names, len(nodes))
	}
	return float64(d.runtime.Nanoseconds()) / float64(d.runs), nil
}

// mapMemlock returns the bytes that the kernel charges for the map pinned at path, the
// "memlock" line of its fdinfo. Kernels from 6.4 report the memory a map uses there; a
// preallocated hash map uses its full size from creation.
func mapMemlock(path string) (int64, error) {
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		return 0, fmt.Errorf("open pinned map %s: %w", path, err)
	}
	defer m.Close()
	fdinfo := fmt.Sprintf("/proc/self/fdinfo/%d", m.FD())
	v, err := procField(fdinfo, "memlock:")
	if err != nil {
		return 0, fmt.Errorf("read memlock of map %s: %w", path, err)
	}
	return v, nil
}

// procField returns the first number after name at the start of a line of a /proc file.
func procField(path, name string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), name)
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			break
		}
		return strconv.ParseInt(fields[0], 10, 64)
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no %q line in %s", name, path)
}

// processRSS returns the resident set size of pid and its peak, in bytes.
func processRSS(pid int) (rss, peak int64, err error) {
	status := fmt.Sprintf("/proc/%d/status", pid)
	rss, err = procField(status, "VmRSS:")
	if err != nil {
		return 0, 0, fmt.Errorf("read VmRSS of pid %d: %w", pid, err)
	}
	peak, err = procField(status, "VmHWM:")
	if err != nil {
		return 0, 0, fmt.Errorf("read VmHWM of pid %d: %w", pid, err)
	}
	return rss * 1024, peak * 1024, nil
}
