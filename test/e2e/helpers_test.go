package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ferrynet/ferry/pkg/datapath"
	"github.com/ferrynet/ferry/test/lab"
)

// newFerryLab builds a lab of nodes and sets ferry up on it with opts; BinDir is filled in.
func newFerryLab(t *testing.T, nodes []lab.NodeSpec, opts lab.FerryOptions) (*lab.Lab,
	lab.FerryOptions) {
	t.Helper()
	lab.SkipUnlessPrivileged(t)
	lab.SkipWithoutPlugins(t, []string{"/usr/lib/cni"}, "host-local", "loopback")
	opts.BinDir = binDir
	l := lab.NewTest(t, lab.Options{Nodes: nodes, CNIBinDirs: []string{binDir, "/usr/lib/cni"}})
	// ferryd lives as long as the context given to SetupFerry: the lab's own teardown
	// stops it.
	if err := l.SetupFerry(context.Background(), opts); err != nil {
		t.Fatalf("set up ferry: %v", err)
	}
	return l, opts
}

func addPod(t *testing.T, n *lab.Node, name string) *lab.Pod {
	t.Helper()
	pod, err := n.AddPod(context.Background(), name, nil)
	if err != nil {
		t.Fatalf("add pod %s on %s: %v", name, n.Name, err)
	}
	return pod
}

var ttlPattern = regexp.MustCompile(`ttl=(\d+)`)

// ping sends count echo requests from ns to dst and returns the output and the TTL of the
// first reply. It fails the test when a reply is missing.
func ping(t *testing.T, ns interface {
	Run(context.Context, ...string) (string, error)
}, dst netip.Addr, count int) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := ns.Run(ctx, "ping", "-n", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "2",
		dst.String())
	if err != nil {
		t.Errorf("ping %s from %v: %v\n%s", dst, ns, err, out)
		return out, 0
	}
	if !strings.Contains(out, fmt.Sprintf("%d received", count)) {
		t.Errorf("ping %s from %v lost replies:\n%s", dst, ns, out)
	}
	m := ttlPattern.FindStringSubmatch(out)
	if m == nil {
		return out, 0
	}
	ttl, _ := strconv.Atoi(m[1])
	return out, ttl
}

// pingFails checks that no echo reply comes back from dst.
func pingFails(t *testing.T, ns interface {
	Run(context.Context, ...string) (string, error)
}, dst netip.Addr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := ns.Run(ctx, "ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", dst.String())
	if err == nil {
		t.Errorf("ping %s from %v succeeded, expected no reply:\n%s", dst, ns, out)
	}
}

// counters reads the node's counters by reason name.
func counters(t *testing.T, n *lab.Node) map[string]uint64 {
	t.Helper()
	maps, err := datapath.OpenMaps(n.BPFFSDir())
	if err != nil {
		t.Fatalf("open maps of %s: %v", n.Name, err)
	}
	defer maps.Close()
	list, err := maps.Counters()
	if err != nil {
		t.Fatalf("read counters of %s: %v", n.Name, err)
	}
	out := map[string]uint64{}
	for _, c := range list {
		out[c.Reason.String()] = c.Packets
	}
	return out
}

func nodeRoutes(t *testing.T, n *lab.Node) map[netip.Prefix]netip.Addr {
	t.Helper()
	maps, err := datapath.OpenMaps(n.BPFFSDir())
	if err != nil {
		t.Fatalf("open maps of %s: %v", n.Name, err)
	}
	defer maps.Close()
	routes, err := maps.NodeRoutes()
	if err != nil {
		t.Fatalf("read node routes of %s: %v", n.Name, err)
	}
	out := map[netip.Prefix]netip.Addr{}
	for _, r := range routes {
		out[r.PodCIDR] = r.NodeIP
	}
	return out
}

// podAttachMode returns how the plugin attaches pod programs on n, as ferryd recorded it.
func podAttachMode(t *testing.T, n *lab.Node) datapath.AttachMode {
	t.Helper()
	maps, err := datapath.OpenEndpointMaps(n.BPFFSDir())
	if err != nil {
		t.Fatalf("open maps of %s: %v", n.Name, err)
	}
	defer maps.Close()
	s, err := maps.Settings()
	if err != nil {
		t.Fatalf("read node settings of %s: %v", n.Name, err)
	}
	return s.PodAttachMode()
}

// queryTCP connects from ns to a peer reporter at addr and returns the source it saw.
func queryTCP(t *testing.T, ns *lab.Namespace, addr netip.AddrPort) netip.AddrPort {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	peer, err := ns.QueryPeerReporter(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("TCP to %s from %s: %v", addr, ns.NSName, err)
	}
	return peer
}

// kernelAtLeast reports whether the running kernel's release is major.minor or later.
func kernelAtLeast(major, minor int) bool {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return false
	}
	var gotMajor, gotMinor int
	release := unix.ByteSliceToString(uts.Release[:])
	if _, err := fmt.Sscanf(release, "%d.%d", &gotMajor, &gotMinor); err != nil {
		return false
	}
	return gotMajor > major || (gotMajor == major && gotMinor >= minor)
}
