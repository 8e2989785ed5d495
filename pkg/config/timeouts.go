package config

import (
	"time"

	"github.com/ferrynet/ferry/pkg/datapath"
)

// Limits of the masquerade.timeouts durations. Below a second, a flow could
// expire between two packets of one exchange. The maximum bounds how long a
// flow that ended without FIN or RST holds its entries.
const (
	MinNATTimeout = time.Second
	MaxNATTimeout = 30 * 24 * time.Hour
)

// fileNATTimeouts is masquerade.timeouts as written: Go durations such as
// 90s, 2m or 6h.
type fileNATTimeouts struct {
	TCPHandshake   string `yaml:"tcpHandshake"`
	TCPEstablished string `yaml:"tcpEstablished"`
	TCPClosing     string `yaml:"tcpClosing"`
	UDP            string `yaml:"udp"`
	ICMP           string `yaml:"icmp"`
}

// validateNATTimeouts parses the NAT timeouts. An unset one keeps its
// default from datapath.DefaultNATTimeouts.
func validateNATTimeouts(ps *problems, raw fileNATTimeouts) datapath.NATTimeouts {
	t := datapath.DefaultNATTimeouts
	fields := []struct {
		name  string
		value string
		out   *time.Duration
	}{
		{"tcpHandshake", raw.TCPHandshake, &t.TCPHandshake},
		{"tcpEstablished", raw.TCPEstablished, &t.TCPEstablished},
		{"tcpClosing", raw.TCPClosing, &t.TCPClosing},
		{"udp", raw.UDP, &t.UDP},
		{"icmp", raw.ICMP, &t.ICMP},
	}
	for _, f := range fields {
		if f.value == "" {
			continue
		}
		field := "masquerade.timeouts." + f.name
		d, err := time.ParseDuration(f.value)
		if err != nil {
			ps.add(field, "invalid duration %q: write a number with a unit, such as %s",
				f.value, *f.out)
			continue
		}
		if d < MinNATTimeout || d > MaxNATTimeout {
			ps.add(field, "invalid timeout %s: use a duration from %s to %s, such as %s",
				d, MinNATTimeout, MaxNATTimeout, *f.out)
			continue
		}
		*f.out = d
	}
	return t
}
