package main

import (
	"cmp"
	"net"
	"slices"
	"strconv"

	"github.com/ferrynet/ferry/pkg/datapath"
)

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
