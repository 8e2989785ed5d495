package datapath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// EndpointMaps are the two maps that the CNI plugin works with: this node's
// settings and its endpoints. Opening two maps instead of all of them is
// part of every pod's ADD and DEL.
type EndpointMaps struct {
	endpoints  *ebpf.Map
	nodeConfig *ebpf.Map
}

// Maps are the dataplane's maps with typed accessors.
type Maps struct {
	EndpointMaps
	nodeRoutes  *ebpf.Map
	masqExclude *ebpf.Map
	natTable    *ebpf.Map
	counters    *ebpf.Map
}

// OpenMaps opens the maps pinned under dir. It returns ErrNotLoaded when the
// directory holds no dataplane.
func OpenMaps(dir string) (*Maps, error) {
	var m Maps
	err := openPinnedMaps(dir, map[string]**ebpf.Map{
		"node_routes":  &m.nodeRoutes,
		"masq_exclude": &m.masqExclude,
		"endpoints":    &m.endpoints,
		"node_config":  &m.nodeConfig,
		"nat_table":    &m.natTable,
		"counters":     &m.counters,
	})
	if err != nil {
		m.Close()
		return nil, err
	}
	return &m, nil
}

// OpenEndpointMaps opens the settings and endpoints maps pinned under dir.
// It returns ErrNotLoaded when the directory holds no dataplane.
func OpenEndpointMaps(dir string) (*EndpointMaps, error) {
	var m EndpointMaps
	err := openPinnedMaps(dir, map[string]**ebpf.Map{
		"endpoints":   &m.endpoints,
		"node_config": &m.nodeConfig,
	})
	if err != nil {
		m.Close()
		return nil, err
	}
	return &m, nil
}

func openPinnedMaps(dir string, targets map[string]**ebpf.Map) error {
	for name, target := range targets {
		mp, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if err != nil {
			if isNotExist(err) {
				return fmt.Errorf("%w: no map %s under %s", ErrNotLoaded, name, dir)
			}
			return fmt.Errorf("open pinned map %s: %w", name, err)
		}
		*target = mp
	}
	return nil
}

// Close releases the maps' file descriptors; the pinned maps stay.
func (m *Maps) Close() error {
	closeAll(m.nodeRoutes, m.masqExclude, m.endpoints, m.nodeConfig, m.natTable, m.counters)
	return nil
}

// Close releases the maps' file descriptors; the pinned maps stay.
func (m *EndpointMaps) Close() error {
	closeAll(m.endpoints, m.nodeConfig)
	return nil
}

// Settings reads this node's settings; ErrNotLoaded means ferryd never wrote them.
func (m *EndpointMaps) Settings() (NodeSettings, error) {
	var raw hostNodeSettings
	if err := m.nodeConfig.Lookup(uint32(0), &raw); err != nil {
		return NodeSettings{}, fmt.Errorf("read node settings: %w", err)
	}
	if raw.NodeIp == 0 {
		return NodeSettings{}, fmt.Errorf("%w: node settings are empty", ErrNotLoaded)
	}
	mask := addrFromBE32(raw.PodMask).As4()
	bits, _ := net.IPMask(mask[:]).Size()
	return NodeSettings{
		NodeIP:        addrFromBE32(raw.NodeIp),
		PodCIDR:       netip.PrefixFrom(addrFromBE32(raw.PodNet), bits),
		UplinkIfIndex: int(raw.UplinkIfindex),
		Masquerade:    raw.Flags&flagMasquerade != 0,
		NATPortMin:    raw.NatPortMin,
		NATPortMax:    raw.NatPortMax,
		UplinkClsact:  raw.Flags&flagUplinkClsact != 0,
		PodClsact:     raw.Flags&flagPodClsact != 0,
	}, nil
}

// SetSettings writes this node's settings.
func (m *EndpointMaps) SetSettings(s NodeSettings) error {
	if !s.NodeIP.Is4() {
		return fmt.Errorf("invalid node IP %q: want an IPv4 address", s.NodeIP)
	}
	if err := requireIPv4Prefix(s.PodCIDR); err != nil {
		return fmt.Errorf("pod CIDR: %w", err)
	}
	if s.NATPortMin == 0 || s.NATPortMax < s.NATPortMin {
		return fmt.Errorf("invalid NAT port range %d-%d: want 1 <= min <= max",
			s.NATPortMin, s.NATPortMax)
	}

	pod := s.PodCIDR.Masked()
	mask := net.CIDRMask(pod.Bits(), 32)
	raw := hostNodeSettings{
		NodeIp:        be32(s.NodeIP),
		PodNet:        be32(pod.Addr()),
		PodMask:       be32(netip.AddrFrom4([4]byte(mask))),
		UplinkIfindex: uint32(s.UplinkIfIndex),
		NatPortMin:    s.NATPortMin,
		NatPortMax:    s.NATPortMax,
	}
	if s.Masquerade {
		raw.Flags |= flagMasquerade
	}
	if s.UplinkClsact {
		raw.Flags |= flagUplinkClsact
	}
	if s.PodClsact {
		raw.Flags |= flagPodClsact
	}
	if err := m.nodeConfig.Put(uint32(0), &raw); err != nil {
		return fmt.Errorf("write node settings: %w", err)
	}
	return nil
}

// PutEndpoint adds or replaces a local pod.
func (m *EndpointMaps) PutEndpoint(ep Endpoint) error {
	if !ep.IP.Is4() {
		return fmt.Errorf("invalid endpoint IP %q: want an IPv4 address", ep.IP)
	}
	podMAC, err := toMAC(ep.PodMAC)
	if err != nil {
		return fmt.Errorf("pod MAC of %s: %w", ep.IP, err)
	}
	hostMAC, err := toMAC(ep.HostMAC)
	if err != nil {
		return fmt.Errorf("host MAC of %s: %w", ep.IP, err)
	}
	key := be32(ep.IP)
	value := hostEndpoint{Ifindex: uint32(ep.IfIndex), PodMac: podMAC, HostMac: hostMAC}
	if err := m.endpoints.Put(key, &value); err != nil {
		return fmt.Errorf("add endpoint %s to map: %w", ep.IP, err)
	}
	return nil
}

// DeleteEndpoint removes a local pod; a missing entry is not an error.
func (m *EndpointMaps) DeleteEndpoint(ip netip.Addr) error {
	err := m.endpoints.Delete(be32(ip))
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete endpoint %s from map: %w", ip, err)
	}
	return nil
}

// LookupEndpoint returns the endpoint of ip, with ok false when there is none.
func (m *EndpointMaps) LookupEndpoint(ip netip.Addr) (Endpoint, bool, error) {
	var value hostEndpoint
	err := m.endpoints.Lookup(be32(ip), &value)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return Endpoint{}, false, nil
	}
	if err != nil {
		return Endpoint{}, false, fmt.Errorf("look up endpoint %s: %w", ip, err)
	}
	return endpointFromRaw(ip, value), true, nil
}

func endpointFromRaw(ip netip.Addr, v hostEndpoint) Endpoint {
	return Endpoint{
		IP:      ip,
		IfIndex: int(v.Ifindex),
		PodMAC:  net.HardwareAddr(append([]byte(nil), v.PodMac[:]...)),
		HostMAC: net.HardwareAddr(append([]byte(nil), v.HostMac[:]...)),
	}
}

// Endpoints lists the local pods.
func (m *EndpointMaps) Endpoints() ([]Endpoint, error) {
	var (
		key   uint32
		value hostEndpoint
		out   []Endpoint
	)
	iter := m.endpoints.Iterate()
	for iter.Next(&key, &value) {
		out = append(out, endpointFromRaw(addrFromBE32(key), value))
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("list endpoints: %w", err)
	}
	return out, nil
}

// NodeRoutes lists the remote pod ranges.
func (m *Maps) NodeRoutes() ([]NodeRoute, error) {
	var (
		key   hostLpmV4Key
		value hostNodeRoute
		out   []NodeRoute
	)
	iter := m.nodeRoutes.Iterate()
	for iter.Next(&key, &value) {
		out = append(out, NodeRoute{PodCIDR: prefixFromKey(key), NodeIP: addrFromBE32(value.NodeIp)})
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("list node routes: %w", err)
	}
	return out, nil
}

// SyncNodeRoutes makes the node routes map equal to routes: entries are
// added or updated first and stale ones deleted after, so that a range that
// stays never disappears on the way.
func (m *Maps) SyncNodeRoutes(routes []NodeRoute) error {
	want := make(map[hostLpmV4Key]hostNodeRoute, len(routes))
	for _, r := range routes {
		if err := requireIPv4Prefix(r.PodCIDR); err != nil {
			return fmt.Errorf("node route: %w", err)
		}
		if !r.NodeIP.Is4() {
			return fmt.Errorf("node route %s: invalid node IP %q", r.PodCIDR, r.NodeIP)
		}
		want[lpmKey(r.PodCIDR)] = hostNodeRoute{NodeIp: be32(r.NodeIP)}
	}
	for key, value := range want {
		if err := m.nodeRoutes.Put(key, value); err != nil {
			return fmt.Errorf("add node route %s: %w", prefixFromKey(key), err)
		}
	}
	return deleteStale(m.nodeRoutes, want)
}

// MasqueradeExclusions lists the destinations that are never masqueraded.
func (m *Maps) MasqueradeExclusions() ([]netip.Prefix, error) {
	var (
		key   hostLpmV4Key
		value hostMasqExclusion
		out   []netip.Prefix
	)
	iter := m.masqExclude.Iterate()
	for iter.Next(&key, &value) {
		out = append(out, prefixFromKey(key))
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("list masquerade exclusions: %w", err)
	}
	return out, nil
}

// SyncMasqueradeExclusions makes the exclusion map equal to prefixes.
func (m *Maps) SyncMasqueradeExclusions(prefixes []netip.Prefix) error {
	want := make(map[hostLpmV4Key]hostMasqExclusion, len(prefixes))
	for _, p := range prefixes {
		if err := requireIPv4Prefix(p); err != nil {
			return fmt.Errorf("masquerade exclusion: %w", err)
		}
		want[lpmKey(p)] = hostMasqExclusion{}
	}
	for key, value := range want {
		if err := m.masqExclude.Put(key, value); err != nil {
			return fmt.Errorf("add masquerade exclusion %s: %w", prefixFromKey(key), err)
		}
	}
	return deleteStale(m.masqExclude, want)
}

func deleteStale[V any](mp *ebpf.Map, want map[hostLpmV4Key]V) error {
	var (
		key   hostLpmV4Key
		stale []hostLpmV4Key
		value V
	)
	iter := mp.Iterate()
	for iter.Next(&key, &value) {
		if _, ok := want[key]; !ok {
			stale = append(stale, key)
		}
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("list %s: %w", mp.String(), err)
	}
	for _, key := range stale {
		if err := mp.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete %s: %w", prefixFromKey(key), err)
		}
	}
	return nil
}

// Counter is the sum over all CPUs of one reason's counter, at one hook or,
// from Counters, at all hooks.
type Counter struct {
	Hook    Hook
	Reason  Reason
	Packets uint64
	Bytes   uint64
}

// Counters returns every reason's counter summed over the hooks, zero ones
// included; Hook is HookAll.
func (m *Maps) Counters() ([]Counter, error) {
	byHook, err := m.CountersByHook()
	if err != nil {
		return nil, err
	}
	var out []Counter
	index := map[Reason]int{}
	for _, c := range byHook {
		i, ok := index[c.Reason]
		if !ok {
			index[c.Reason] = len(out)
			out = append(out, Counter{Hook: HookAll, Reason: c.Reason})
			i = len(out) - 1
		}
		out[i].Packets += c.Packets
		out[i].Bytes += c.Bytes
	}
	return out, nil
}

// CountersByHook returns the counter of every hook and reason, zero ones included.
func (m *Maps) CountersByHook() ([]Counter, error) {
	var out []Counter
	for h := Hook(0); h < hookMax; h++ {
		for r := Reason(0); r < reasonMax; r++ {
			if _, ok := reasonNames[r]; !ok {
				continue
			}
			var perCPU []hostCounter
			key := uint32(h)*uint32(reasonMax) + uint32(r)
			if err := m.counters.Lookup(key, &perCPU); err != nil {
				return nil, fmt.Errorf("read counter %s at %s: %w", r, h, err)
			}
			c := Counter{Hook: h, Reason: r}
			for _, v := range perCPU {
				c.Packets += v.Packets
				c.Bytes += v.Bytes
			}
			out = append(out, c)
		}
	}
	return out, nil
}
