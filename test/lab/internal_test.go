package lab

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestParsePing(t *testing.T) {
	out := `PING 10.200.1.2 (10.200.1.2) 56(84) bytes of data.
64 bytes from 10.200.1.2: icmp_seq=1 ttl=62 time=0.080 ms
64 bytes from 10.200.1.2: icmp_seq=2 ttl=61 time=0.061 ms

--- 10.200.1.2 ping statistics ---
3 packets transmitted, 2 received, 33.3333% packet loss, time 405ms
`
	got := parsePing(out)
	want := pingStats{transmitted: 3, received: 2, ttls: []int{62, 61}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parsePing = %+v, expected %+v", got, want)
	}
	if got := parsePing("ping: connect: Network is unreachable\n"); got.transmitted != 0 {
		t.Errorf("parsePing of an error counts %d transmitted, expected 0", got.transmitted)
	}
}

func TestServiceRules(t *testing.T) {
	vip := netip.MustParseAddrPort("10.32.0.1:443")
	chain := serviceChain(vip)
	if chain != "LAB-SVC-0A200001-443" {
		t.Errorf("serviceChain = %s, expected LAB-SVC-0A200001-443", chain)
	}
	backends := []netip.AddrPort{
		netip.MustParseAddrPort("10.0.1.10:6443"),
		netip.MustParseAddrPort("10.0.1.11:6443"),
		netip.MustParseAddrPort("10.0.1.12:6443"),
	}
	rules := serviceRules(chain, backends)
	want := []string{
		"-A LAB-SVC-0A200001-443 -p tcp -m statistic --mode random --probability " +
			"0.3333333333 -j DNAT --to-destination 10.0.1.10:6443",
		"-A LAB-SVC-0A200001-443 -p tcp -m statistic --mode random --probability " +
			"0.5000000000 -j DNAT --to-destination 10.0.1.11:6443",
		"-A LAB-SVC-0A200001-443 -p tcp -j DNAT --to-destination 10.0.1.12:6443",
	}
	if len(rules) != len(want) {
		t.Fatalf("serviceRules returned %d rules, expected %d", len(rules), len(want))
	}
	for i := range rules {
		if got := strings.Join(rules[i], " "); got != want[i] {
			t.Errorf("rule %d = %q, expected %q", i, got, want[i])
		}
	}
}

func TestValidateNodes(t *testing.T) {
	good := NodeSpec{Name: "worker-0", IP: netip.MustParseAddr("10.0.1.20"),
		PodCIDR: netip.MustParsePrefix("10.200.0.0/24")}
	if err := validateNodes([]NodeSpec{good}); err != nil {
		t.Fatalf("valid node rejected: %v", err)
	}
	cases := map[string]func(s *NodeSpec){
		"upper-case name":   func(s *NodeSpec) { s.Name = "Worker" },
		"reserved name":     func(s *NodeSpec) { s.Name = "vpc" },
		"IP off subnet":     func(s *NodeSpec) { s.IP = netip.MustParseAddr("10.0.2.20") },
		"gateway IP":        func(s *NodeSpec) { s.IP = netip.MustParseAddr("10.0.1.1") },
		"outside host IP":   func(s *NodeSpec) { s.IP = OutsideHostIP },
		"broadcast IP":      func(s *NodeSpec) { s.IP = netip.MustParseAddr("10.0.1.255") },
		"unknown subnet":    func(s *NodeSpec) { s.Subnet = 2 },
		"unmasked pod CIDR": func(s *NodeSpec) { s.PodCIDR = netip.MustParsePrefix("10.200.0.1/24") },
		"missing pod CIDR":  func(s *NodeSpec) { s.PodCIDR = netip.Prefix{} },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			s := good
			mutate(&s)
			if err := validateNodes([]NodeSpec{s}); err == nil {
				t.Errorf("node %+v accepted, expected an error", s)
			}
		})
	}

	other := NodeSpec{Name: "worker-1", IP: netip.MustParseAddr("10.0.1.21"),
		PodCIDR: netip.MustParsePrefix("10.200.0.128/25")}
	if err := validateNodes([]NodeSpec{good, other}); err == nil {
		t.Errorf("overlapping pod CIDRs accepted, expected an error")
	}
	other.PodCIDR = netip.MustParsePrefix("10.200.1.0/24")
	other.Name = "worker-0"
	if err := validateNodes([]NodeSpec{good, other}); err == nil {
		t.Errorf("duplicate node names accepted, expected an error")
	}
}

func TestBaselineConflist(t *testing.T) {
	n := &Node{PodCIDR: netip.MustParsePrefix("10.200.1.0/24"), IPAMDir: "/x/ipam"}
	got := string(n.BaselineConflist())
	for _, want := range []string{`"type": "bridge"`, `"isGateway": true`, `"ipMasq": false`,
		`"subnet": "10.200.1.0/24"`, `"dataDir": "/x/ipam"`, `"type": "loopback"`,
		`"dst": "0.0.0.0/0"`} {
		if !strings.Contains(got, want) {
			t.Errorf("baseline conflist lacks %s:\n%s", want, got)
		}
	}
}
