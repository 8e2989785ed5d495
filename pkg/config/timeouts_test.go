package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ferrynet/ferry/pkg/datapath"
)

func TestNATTimeoutsDefault(t *testing.T) {
	cfg, err := Load("testdata/minimal.yaml")
	if err != nil {
		t.Fatalf("load minimal config: %v", err)
	}
	if got := cfg.Masquerade.Timeouts; got != datapath.DefaultNATTimeouts {
		t.Errorf("timeouts = %+v, want the defaults %+v", got, datapath.DefaultNATTimeouts)
	}
}

func TestNATTimeoutsSet(t *testing.T) {
	input := baseConfig + "masquerade:\n  timeouts:\n    tcpHandshake: 20s\n" +
		"    tcpEstablished: 24h\n    tcpClosing: 30s\n    udp: 1m30s\n    icmp: 5s\n"
	cfg, err := Parse([]byte(input))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	want := datapath.NATTimeouts{
		TCPHandshake:   20 * time.Second,
		TCPEstablished: 24 * time.Hour,
		TCPClosing:     30 * time.Second,
		UDP:            90 * time.Second,
		ICMP:           5 * time.Second,
	}
	if got := cfg.Masquerade.Timeouts; got != want {
		t.Errorf("timeouts = %+v, want %+v", got, want)
	}
}

func TestNATTimeoutsPartlySet(t *testing.T) {
	cfg, err := Parse([]byte(baseConfig + "masquerade:\n  timeouts: {udp: 45s}\n"))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	want := datapath.DefaultNATTimeouts
	want.UDP = 45 * time.Second
	if got := cfg.Masquerade.Timeouts; got != want {
		t.Errorf("timeouts = %+v, want %+v", got, want)
	}
}

func TestNATTimeoutsInvalid(t *testing.T) {
	cases := []struct {
		name, timeouts, field, text string
	}{
		{"not a duration", "{udp: soon}", "masquerade.timeouts.udp", "invalid duration"},
		{"no unit", "{icmp: 30}", "masquerade.timeouts.icmp", "invalid duration"},
		{"too short", "{tcpClosing: 500ms}", "masquerade.timeouts.tcpClosing", "from 1s"},
		{"too long", "{tcpEstablished: 1000h}", "masquerade.timeouts.tcpEstablished",
			"to 720h"},
		{"negative", "{tcpHandshake: -1m}", "masquerade.timeouts.tcpHandshake", "from 1s"},
		{"unknown state", "{tcpSynSent: 1m}", "masquerade.timeouts.tcpSynSent",
			"tcpHandshake, tcpEstablished, tcpClosing, udp, icmp"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(baseConfig + "masquerade:\n  timeouts: " + tc.timeouts + "\n"))
			var cfgErr *Error
			if !errors.As(err, &cfgErr) {
				t.Fatalf("Parse error = %v, want *Error", err)
			}
			if len(cfgErr.Problems) != 1 {
				t.Fatalf("got %d problems, want 1: %v", len(cfgErr.Problems), err)
			}
			p := cfgErr.Problems[0]
			if p.Field != tc.field {
				t.Errorf("problem field = %q, want %q (%s)", p.Field, tc.field, p)
			}
			if !strings.Contains(p.Message, tc.text) {
				t.Errorf("problem message %q does not contain %q", p.Message, tc.text)
			}
		})
	}
}
