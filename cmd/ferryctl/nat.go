package main

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ferrynet/ferry/pkg/datapath"
)

// natTuple is the JSON of one direction of a flow. For ICMP echo the source
// port is the echo identifier.
type natTuple struct {
	Src string `json:"src"`
	Dst string `json:"dst"`
}

// natFlow is the JSON of one masqueraded flow.
type natFlow struct {
	Proto      string   `json:"proto"`
	Original   natTuple `json:"original"`
	Translated natTuple `json:"translated"`
	State      string   `json:"state"`
	// Paired is false when the flow's ingress entry is missing.
	Paired      bool    `json:"paired"`
	AgeSeconds  float64 `json:"ageSeconds"`
	IdleSeconds float64 `json:"idleSeconds"`
}

func allNATView(m *datapath.Maps, _ string) (view, error) { return natView(m, netip.Addr{}) }

// natView lists the masqueraded flows, or only those that pod started when
// pod is valid. The translation keeps the destination, so the table shows
// only the translated source.
func natView(m *datapath.Maps, pod netip.Addr) (view, error) {
	flows, err := m.NATFlows()
	if err != nil {
		return nil, err
	}
	if pod.IsValid() {
		flows = slices.DeleteFunc(flows, func(f datapath.NATFlow) bool {
			return f.Original.Src.Addr() != pod
		})
	}
	slices.SortFunc(flows, func(a, b datapath.NATFlow) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), a.Original.Src.Compare(b.Original.Src),
			a.Original.Dst.Compare(b.Original.Dst))
	})

	now := monotonicNow()
	r := report{columns: []string{"PROTO", "SRC", "DST", "NAT SRC", "STATE", "AGE", "IDLE"}}
	data := make([]natFlow, 0, len(flows))
	for _, f := range flows {
		age := max(now-f.Created, 0)
		idle := max(now-f.LastSeen, 0)
		state := f.State.String()
		if !f.Paired {
			state += ",unpaired"
		}
		data = append(data, natFlow{
			Proto:       protoName(f.Proto),
			Original:    natTuple{Src: f.Original.Src.String(), Dst: f.Original.Dst.String()},
			Translated:  natTuple{Src: f.Translated.Src.String(), Dst: f.Translated.Dst.String()},
			State:       f.State.String(),
			Paired:      f.Paired,
			AgeSeconds:  age.Seconds(),
			IdleSeconds: idle.Seconds(),
		})
		r.rows = append(r.rows, []string{protoName(f.Proto), f.Original.Src.String(),
			f.Original.Dst.String(), f.Translated.Src.String(), state,
			age.Round(time.Second).String(), idle.Round(time.Second).String()})
	}
	r.data = data
	return r, nil
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

// monotonicNow reads CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns that
// stamps NAT entries.
func monotonicNow() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
