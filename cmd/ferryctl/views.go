package main

import (
	"cmp"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ferrynet/ferry/pkg/datapath"
)

// status is the JSON of the status command.
type status struct {
	BPFFSDir             string `json:"bpffsDir"`
	NodeIP               string `json:"nodeIP"`
	PodCIDR              string `json:"podCIDR"`
	UplinkIfIndex        int    `json:"uplinkIfindex"`
	UplinkIfName         string `json:"uplinkIfname"`
	AttachMode           string `json:"attachMode"`
	Masquerade           bool   `json:"masquerade"`
	NATPortMin           uint16 `json:"natPortMin"`
	NATPortMax           uint16 `json:"natPortMax"`
	NodeRoutes           int    `json:"nodeRoutes"`
	MasqueradeExclusions int    `json:"masqueradeExclusions"`
	Endpoints            int    `json:"endpoints"`
	NATEntries           int    `json:"natEntries"`
	NATCapacity          uint32 `json:"natCapacity"`
}

func statusView(m *datapath.Maps, dir string) (view, error) {
	s, err := m.Settings()
	if err != nil {
		return nil, err
	}
	routes, err := m.NodeRoutes()
	if err != nil {
		return nil, err
	}
	exclusions, err := m.MasqueradeExclusions()
	if err != nil {
		return nil, err
	}
	eps, err := m.Endpoints()
	if err != nil {
		return nil, err
	}
	nat, err := m.NATEntries()
	if err != nil {
		return nil, err
	}

	st := status{
		BPFFSDir:             dir,
		NodeIP:               s.NodeIP.String(),
		PodCIDR:              s.PodCIDR.String(),
		UplinkIfIndex:        s.UplinkIfIndex,
		UplinkIfName:         ifName(s.UplinkIfIndex),
		AttachMode:           string(datapath.AttachTCX),
		Masquerade:           s.Masquerade,
		NATPortMin:           s.NATPortMin,
		NATPortMax:           s.NATPortMax,
		NodeRoutes:           len(routes),
		MasqueradeExclusions: len(exclusions),
		Endpoints:            len(eps),
		NATEntries:           len(nat),
		NATCapacity:          m.NATCapacity(),
	}
	if s.Clsact {
		st.AttachMode = string(datapath.AttachClsact)
	}

	masq := "disabled"
	if st.Masquerade {
		masq = fmt.Sprintf("enabled, ports %d-%d", st.NATPortMin, st.NATPortMax)
	}
	return report{
		rows: [][]string{
			{"BPFFS DIR", st.BPFFSDir},
			{"NODE IP", st.NodeIP},
			{"POD CIDR", st.PodCIDR},
			{"UPLINK", fmt.Sprintf("%s (ifindex %d)", orDash(st.UplinkIfName), st.UplinkIfIndex)},
			{"ATTACH MODE", st.AttachMode},
			{"MASQUERADE", masq},
			{"NODE ROUTES", strconv.Itoa(st.NodeRoutes)},
			{"MASQUERADE EXCLUSIONS", strconv.Itoa(st.MasqueradeExclusions)},
			{"ENDPOINTS", strconv.Itoa(st.Endpoints)},
			{"NAT ENTRIES", fmt.Sprintf("%d of %d", st.NATEntries, st.NATCapacity)},
		},
		data: st,
	}, nil
}

// route is the JSON of one node route.
type route struct {
	PodCIDR string `json:"podCIDR"`
	NodeIP  string `json:"nodeIP"`
}

func routesView(m *datapath.Maps, _ string) (view, error) {
	routes, err := m.NodeRoutes()
	if err != nil {
		return nil, err
	}
	slices.SortFunc(routes, func(a, b datapath.NodeRoute) int {
		return cmp.Or(a.PodCIDR.Addr().Compare(b.PodCIDR.Addr()),
			cmp.Compare(a.PodCIDR.Bits(), b.PodCIDR.Bits()))
	})
	r := report{columns: []string{"POD CIDR", "NODE IP"}}
	data := make([]route, 0, len(routes))
	for _, x := range routes {
		data = append(data, route{PodCIDR: x.PodCIDR.String(), NodeIP: x.NodeIP.String()})
		r.rows = append(r.rows, []string{x.PodCIDR.String(), x.NodeIP.String()})
	}
	r.data = data
	return r, nil
}

// endpoint is the JSON of one local endpoint. IfName is empty when the
// interface is not in ferryctl's network namespace.
type endpoint struct {
	IP      string `json:"ip"`
	IfIndex int    `json:"ifindex"`
	IfName  string `json:"ifname"`
	PodMAC  string `json:"podMAC"`
	HostMAC string `json:"hostMAC"`
}

func endpointsView(m *datapath.Maps, _ string) (view, error) {
	eps, err := m.Endpoints()
	if err != nil {
		return nil, err
	}
	slices.SortFunc(eps, func(a, b datapath.Endpoint) int { return a.IP.Compare(b.IP) })
	r := report{columns: []string{"IP", "IFINDEX", "IFNAME", "POD MAC", "HOST MAC"}}
	data := make([]endpoint, 0, len(eps))
	for _, ep := range eps {
		e := endpoint{
			IP:      ep.IP.String(),
			IfIndex: ep.IfIndex,
			IfName:  ifName(ep.IfIndex),
			PodMAC:  ep.PodMAC.String(),
			HostMAC: ep.HostMAC.String(),
		}
		data = append(data, e)
		r.rows = append(r.rows, []string{e.IP, strconv.Itoa(e.IfIndex), orDash(e.IfName),
			e.PodMAC, e.HostMAC})
	}
	r.data = data
	return r, nil
}

// natFlow is the JSON of one NAT entry. For ICMP echo the port of the
// identifier's side is the echo identifier.
type natFlow struct {
	Proto       string   `json:"proto"`
	Direction   string   `json:"direction"`
	Src         string   `json:"src"`
	Dst         string   `json:"dst"`
	Translated  string   `json:"translated"`
	TCPFlags    []string `json:"tcpFlags"`
	AgeSeconds  float64  `json:"ageSeconds"`
	IdleSeconds float64  `json:"idleSeconds"`
}

func natView(m *datapath.Maps, _ string) (view, error) {
	entries, err := m.NATEntries()
	if err != nil {
		return nil, err
	}
	slices.SortFunc(entries, func(a, b datapath.NATEntry) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Direction, b.Direction),
			a.Src.Compare(b.Src), a.Dst.Compare(b.Dst))
	})
	now := monotonicNow()
	r := report{columns: []string{"PROTO", "DIR", "SRC", "DST", "TRANSLATED", "AGE", "IDLE"}}
	data := make([]natFlow, 0, len(entries))
	for _, e := range entries {
		age := max(now-e.Created, 0)
		idle := max(now-e.LastSeen, 0)
		f := natFlow{
			Proto:       protoName(e.Proto),
			Direction:   e.Direction.String(),
			Src:         e.Src.String(),
			Dst:         e.Dst.String(),
			Translated:  e.TranslateTo.String(),
			TCPFlags:    tcpFlagNames(e.Proto, e.TCPFlags),
			AgeSeconds:  age.Seconds(),
			IdleSeconds: idle.Seconds(),
		}
		data = append(data, f)
		r.rows = append(r.rows, []string{f.Proto, f.Direction, f.Src, f.Dst, f.Translated,
			age.Round(time.Second).String(), idle.Round(time.Second).String()})
	}
	r.data = data
	return r, nil
}

// counter is the JSON of one reason's counter.
type counter struct {
	Reason  string `json:"reason"`
	Drop    bool   `json:"drop"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

func statsView(m *datapath.Maps, _ string) (view, error) {
	counters, err := m.Counters()
	if err != nil {
		return nil, err
	}
	r := report{columns: []string{"REASON", "PACKETS", "BYTES", "DROP"}}
	data := make([]counter, 0, len(counters))
	for _, c := range counters {
		data = append(data, counter{Reason: c.Reason.String(), Drop: c.Reason.IsDrop(),
			Packets: c.Packets, Bytes: c.Bytes})
		drop := "no"
		if c.Reason.IsDrop() {
			drop = "yes"
		}
		r.rows = append(r.rows, []string{c.Reason.String(), strconv.FormatUint(c.Packets, 10),
			strconv.FormatUint(c.Bytes, 10), drop})
	}
	r.data = data
	return r, nil
}

// ifName returns the name of the interface ifindex in this network
// namespace, or "" when there is none.
func ifName(ifindex int) string {
	iface, err := net.InterfaceByIndex(ifindex)
	if err != nil {
		return ""
	}
	return iface.Name
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func protoName(proto uint8) string {
	switch proto {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_ICMP:
		return "icmp"
	default:
		return strconv.Itoa(int(proto))
	}
}

// tcpFlagNames names the flags of a TCP header's flags byte, in bit order.
func tcpFlagNames(proto, flags uint8) []string {
	names := []string{}
	if proto != unix.IPPROTO_TCP {
		return names
	}
	for i, name := range strings.Fields("FIN SYN RST PSH ACK URG ECE CWR") {
		if flags&(1<<i) != 0 {
			names = append(names, name)
		}
	}
	return names
}

// monotonicNow reads CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns that
// stamps NAT entries.
func monotonicNow() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
