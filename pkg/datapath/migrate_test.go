package datapath

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

var (
	btfU8  = &btf.Int{Name: "__u8", Size: 1}
	btfU32 = &btf.Int{Name: "__u32", Size: 4}
	btfU64 = &btf.Int{Name: "__u64", Size: 8}
)

func btfBytes(n uint32) btf.Type { return &btf.Array{Index: btfU32, Type: btfU8, Nelems: n} }

// member returns a struct member at a byte offset.
func member(name string, typ btf.Type, offset uint32) btf.Member {
	return btf.Member{Name: name, Type: typ, Offset: btf.Bits(offset * 8)}
}

// newBPFFSDir returns a fresh directory on the bpffs that the test removes.
func newBPFFSDir(t *testing.T) string {
	t.Helper()
	n := newTestNode(t)
	if err := ensureBPFFS(n.dir); err != nil {
		t.Fatal(err)
	}
	return n.dir
}

// pinOldMap creates the map of spec pinned by name under dir, as an older
// ferry would have left it, and returns it open.
func pinOldMap(t *testing.T, dir string, spec *ebpf.MapSpec) *ebpf.Map {
	t.Helper()
	spec.Pinning = ebpf.PinByName
	m, err := ebpf.NewMapWithOptions(spec, ebpf.MapOptions{PinPath: dir})
	if err != nil {
		t.Fatalf("create old map %s: %v", spec.Name, err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func loadTest(t *testing.T, dir string, natEntries uint32) *Datapath {
	t.Helper()
	d, err := Load(dir, LoadOptions{NATEntries: natEntries})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func migrationOf(d *Datapath, name string) (MapMigration, bool) {
	i := slices.IndexFunc(d.Migrations, func(m MapMigration) bool { return m.Map == name })
	if i < 0 {
		return MapMigration{}, false
	}
	return d.Migrations[i], true
}

// oldEndpointsSpec is an endpoints map whose value lacks host_mac: 12 bytes
// where this version has 16.
func oldEndpointsSpec() *ebpf.MapSpec {
	return &ebpf.MapSpec{
		Name:       "endpoints",
		Type:       ebpf.Hash,
		KeySize:    4,
		ValueSize:  12,
		MaxEntries: 65536,
		Key: &btf.Struct{Name: "endpoint_key", Size: 4, Members: []btf.Member{
			member("addr", btfU32, 0)}},
		Value: &btf.Struct{Name: "endpoint", Size: 12, Members: []btf.Member{
			member("ifindex", btfU32, 0),
			member("pod_mac", btfBytes(6), 4),
			member("pad", btfBytes(2), 10),
		}},
	}
}

func oldEndpoint(ifindex uint32, mac net.HardwareAddr) []byte {
	v := make([]byte, 12)
	v[0], v[1], v[2], v[3] = byte(ifindex), byte(ifindex>>8), byte(ifindex>>16), byte(ifindex>>24)
	copy(v[4:10], mac)
	return v
}

func TestLoadMigratesEndpointsOfOldLayout(t *testing.T) {
	dir := newBPFFSDir(t)
	old := pinOldMap(t, dir, oldEndpointsSpec())
	podIP := netip.MustParseAddr("10.200.0.2")
	podMAC := mustParseMAC(t, "02:00:00:00:00:02")
	if err := old.Put(podIP.As4(), oldEndpoint(7, podMAC)); err != nil {
		t.Fatal(err)
	}

	d := loadTest(t, dir, 1024)
	m, ok := migrationOf(d, "endpoints")
	if !ok {
		t.Fatalf("no migration of endpoints in %+v", d.Migrations)
	}
	if m.Copied != 1 || m.Emptied {
		t.Errorf("migration = %+v, want 1 entry copied", m)
	}
	if !strings.Contains(m.Change, "ValueSize: 12 changed to 16") {
		t.Errorf("change = %q, want the value size change", m.Change)
	}
	ep, found, err := d.LookupEndpoint(podIP)
	if err != nil || !found {
		t.Fatalf("endpoint %s after migration: found %v, error %v", podIP, found, err)
	}
	if ep.IfIndex != 7 {
		t.Errorf("ifindex = %d, want 7", ep.IfIndex)
	}
	if ep.PodMAC.String() != podMAC.String() {
		t.Errorf("pod MAC = %s, want %s", ep.PodMAC, podMAC)
	}
	if ep.HostMAC.String() != "00:00:00:00:00:00" {
		t.Errorf("host MAC = %s, want zero for a field the old layout lacks", ep.HostMAC)
	}

	// An endpoint that reaches the old map after Load, as from a CNI ADD
	// that opened the maps before the swap, is copied by FinishMigrations.
	late := netip.MustParseAddr("10.200.0.3")
	if err := old.Put(late.As4(), oldEndpoint(8, podMAC)); err != nil {
		t.Fatal(err)
	}
	added, err := d.FinishMigrations()
	if err != nil {
		t.Fatalf("FinishMigrations: %v", err)
	}
	if added != 1 {
		t.Errorf("FinishMigrations added %d entries, want 1", added)
	}
	if _, found, _ := d.LookupEndpoint(late); !found {
		t.Errorf("endpoint %s added to the old map is missing after FinishMigrations", late)
	}
}

func TestLoadKeepsCompatibleMaps(t *testing.T) {
	dir := newBPFFSDir(t)
	d := loadTest(t, dir, 1024)
	ip := netip.MustParseAddr("10.200.0.2")
	mac := mustParseMAC(t, "02:00:00:00:00:02")
	if err := d.PutEndpoint(Endpoint{IP: ip, IfIndex: 5, PodMAC: mac, HostMAC: mac}); err != nil {
		t.Fatal(err)
	}
	d.Close()

	again := loadTest(t, dir, 1024)
	if len(again.Migrations) != 0 {
		t.Errorf("second Load migrated %+v, want nothing", again.Migrations)
	}
	if _, found, _ := again.LookupEndpoint(ip); !found {
		t.Errorf("endpoint %s lost across Load", ip)
	}
}

func TestLoadResizesNATTable(t *testing.T) {
	dir := newBPFFSDir(t)
	d := loadTest(t, dir, 1024)
	key := hostNatKey{Saddr: be32(netip.MustParseAddr("10.200.0.2")), Sport: be16(40000),
		Daddr: be32(netip.MustParseAddr("203.0.113.10")), Dport: be16(80), Proto: 6}
	value := hostNatEntry{Addr: be32(netip.MustParseAddr("10.0.1.20")), Port: be16(40000)}
	if err := d.natTable.Put(key, value); err != nil {
		t.Fatal(err)
	}
	d.Close()

	bigger := loadTest(t, dir, 2048)
	m, ok := migrationOf(bigger, "nat_table")
	if !ok {
		t.Fatalf("no migration of nat_table in %+v", bigger.Migrations)
	}
	if m.Copied != 1 || m.Emptied {
		t.Errorf("migration = %+v, want 1 entry copied", m)
	}
	if got := bigger.NATCapacity(); got != 2048 {
		t.Errorf("NAT capacity = %d, want 2048", got)
	}
	var got hostNatEntry
	if err := bigger.natTable.Lookup(key, &got); err != nil {
		t.Fatalf("NAT entry lost in the resize: %v", err)
	}
	if got != value {
		t.Errorf("NAT entry = %+v, want %+v", got, value)
	}
}

func TestLoadRejectsUnconvertibleNATTable(t *testing.T) {
	dir := newBPFFSDir(t)
	// saddr widened to 8 bytes: entries cannot be converted by name.
	old := pinOldMap(t, dir, &ebpf.MapSpec{
		Name:       "nat_table",
		Type:       ebpf.Hash,
		KeySize:    24,
		ValueSize:  24,
		MaxEntries: 1024,
		Key: &btf.Struct{Name: "nat_key", Size: 24, Members: []btf.Member{
			member("saddr", btfU64, 0),
			member("daddr", btfU32, 8),
			member("rest", btfBytes(12), 12),
		}},
		Value: &btf.Struct{Name: "nat_entry", Size: 24, Members: []btf.Member{
			member("addr", btfU32, 0),
			member("rest", btfBytes(20), 4),
		}},
	})
	if err := old.Put(make([]byte, 24), make([]byte, 24)); err != nil {
		t.Fatal(err)
	}

	_, err := Load(dir, LoadOptions{NATEntries: 1024})
	if !errors.Is(err, ErrMapLayout) {
		t.Fatalf("Load error = %v, want ErrMapLayout", err)
	}
	for _, want := range []string{"nat_table", "saddr", "ferryd --remove", "reset"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q: %v", want, err)
		}
	}
	pinned, err := ebpf.LoadPinnedMap(filepath.Join(dir, "nat_table"), nil)
	if err != nil {
		t.Fatalf("open pinned nat_table after the rejected Load: %v", err)
	}
	defer pinned.Close()
	if pinned.KeySize() != 24 {
		t.Errorf("pinned nat_table has key size %d, want the old map's 24", pinned.KeySize())
	}
	var k, v = make([]byte, 24), make([]byte, 24)
	if err := pinned.Lookup(k, v); err != nil {
		t.Errorf("the old NAT entry is gone after the rejected Load: %v", err)
	}
}

func TestLoadEmptiesRefilledMapOfOtherKey(t *testing.T) {
	dir := newBPFFSDir(t)
	old := pinOldMap(t, dir, &ebpf.MapSpec{
		Name:       "masq_exclude",
		Type:       ebpf.Hash,
		KeySize:    4,
		ValueSize:  4,
		MaxEntries: 16,
	})
	if err := old.Put(uint32(1), uint32(1)); err != nil {
		t.Fatal(err)
	}
	d := loadTest(t, dir, 1024)
	m, ok := migrationOf(d, "masq_exclude")
	if !ok {
		t.Fatalf("no migration of masq_exclude in %+v", d.Migrations)
	}
	if !m.Emptied || !strings.Contains(m.Why, "map type changed") {
		t.Errorf("migration = %+v, want an emptied map for the changed type", m)
	}
	got, err := d.MasqueradeExclusions()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Errorf("exclusions = %v, want none", got)
	}
}

func TestLoadDetectsMovedFields(t *testing.T) {
	dir := newBPFFSDir(t)
	// The same sizes as node_route, with the fields swapped.
	old := pinOldMap(t, dir, &ebpf.MapSpec{
		Name:       "node_routes",
		Type:       ebpf.LPMTrie,
		Flags:      1, // BPF_F_NO_PREALLOC
		KeySize:    8,
		ValueSize:  8,
		MaxEntries: 16384,
		Key: &btf.Struct{Name: "lpm_v4_key", Size: 8, Members: []btf.Member{
			member("prefixlen", btfU32, 0), member("addr", btfU32, 4)}},
		Value: &btf.Struct{Name: "node_route", Size: 8, Members: []btf.Member{
			member("flags", btfU32, 0), member("node_ip", btfU32, 4)}},
	})
	key := hostLpmV4Key{Prefixlen: 24, Addr: be32(netip.MustParseAddr("10.200.1.0"))}
	nodeIP := be32(netip.MustParseAddr("10.0.1.21"))
	if err := old.Put(key, [2]uint32{0, nodeIP}); err != nil {
		t.Fatal(err)
	}

	d := loadTest(t, dir, 1024)
	if m, ok := migrationOf(d, "node_routes"); !ok || m.Change != "value fields changed" {
		t.Fatalf("migration of node_routes = %+v (found %v), want value fields changed", m, ok)
	}
	routes, err := d.NodeRoutes()
	if err != nil {
		t.Fatal(err)
	}
	want := []NodeRoute{{PodCIDR: netip.MustParsePrefix("10.200.1.0/24"),
		NodeIP: netip.MustParseAddr("10.0.1.21")}}
	if !slices.Equal(routes, want) {
		t.Errorf("node routes = %v, want %v with node_ip moved to its new place", routes, want)
	}
}

func TestLoadRemovesStalePins(t *testing.T) {
	dir := newBPFFSDir(t)
	loadTest(t, dir, 1024).Close()
	stale := []string{
		filepath.Join(dir, "old_map"),
		filepath.Join(dir, "nat_table_new"),
		filepath.Join(dir, progsDir, "old_prog"),
	}
	pinOldMap(t, dir, &ebpf.MapSpec{Name: "old_map", Type: ebpf.Array, KeySize: 4,
		ValueSize: 4, MaxEntries: 1})
	for _, path := range stale[1:] {
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4,
			MaxEntries: 1})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Pin(path); err != nil {
			t.Fatal(err)
		}
		m.Close()
	}

	d := loadTest(t, dir, 1024)
	slices.Sort(d.RemovedPins)
	want := slices.Sorted(slices.Values(stale))
	if !slices.Equal(d.RemovedPins, want) {
		t.Errorf("removed pins = %v, want %v", d.RemovedPins, want)
	}
	for _, path := range stale {
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("stale pin %s still exists", path)
		}
	}
	for _, name := range []string{"endpoints", "nat_table", progsDir + "/" + progFromPod} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("pin %s of this version is gone: %v", name, err)
		}
	}
}

func TestRemoveStaleLinksOfDeletedVeth(t *testing.T) {
	n := newTestNode(t)
	n.requireTCX(t)
	n.start(t, AttachTCX)
	podLink := filepath.Join(n.dir, linksDir, podLinkName("fypod"))
	if _, err := os.Stat(podLink); err != nil {
		t.Fatalf("pod link not pinned: %v", err)
	}

	var removed []string
	err := n.ns.Do(func(ns.NetNS) error {
		// Nothing is stale while the veth exists.
		got, err := RemoveStaleLinks(n.dir, n.uplink)
		if err != nil || len(got) != 0 {
			t.Errorf("RemoveStaleLinks with every interface present removed %v, error %v",
				got, err)
		}
		veth, err := netlink.LinkByName("fypod")
		if err != nil {
			return err
		}
		if err := netlink.LinkDel(veth); err != nil {
			return err
		}
		removed, err = RemoveStaleLinks(n.dir, n.uplink)
		return err
	})
	if err != nil {
		t.Fatalf("RemoveStaleLinks: %v", err)
	}
	if !slices.Equal(removed, []string{podLink}) {
		t.Errorf("removed = %v, want [%s]", removed, podLink)
	}
	if _, err := os.Stat(podLink); !os.IsNotExist(err) {
		t.Errorf("pod link pin of the deleted veth still exists")
	}
	for _, name := range []string{linkUplinkIngress, linkUplinkEgress} {
		if _, err := os.Stat(filepath.Join(n.dir, linksDir, name)); err != nil {
			t.Errorf("uplink link %s removed: %v", name, err)
		}
	}
}

func mustParseMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	mac, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return mac
}
