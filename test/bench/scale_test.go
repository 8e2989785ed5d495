package main

import (
	"net/netip"
	"testing"

	"github.com/ferrynet/ferry/test/lab"
)

func TestExtraPodCIDRsAreDistinct(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range extraRoutes() {
		if seen[r.PodCIDR.String()] {
			t.Fatalf("pod CIDR %v appears twice", r.PodCIDR)
		}
		seen[r.PodCIDR.String()] = true
		if !clusterCIDR.Contains(r.PodCIDR.Addr()) {
			t.Errorf("pod CIDR %v is outside the cluster CIDR %v", r.PodCIDR, clusterCIDR)
		}
	}
	if len(seen) != extraNodes {
		t.Errorf("%d extra routes, want %d", len(seen), extraNodes)
	}
}

func TestExtraNodeIPsAreUnused(t *testing.T) {
	lab0 := netip.MustParsePrefix("10.0.0.0/16")
	seen := map[netip.Addr]bool{}
	for i := range extraNodes {
		ip := extraNodeIP(i)
		if seen[ip] {
			t.Fatalf("node IP %v appears twice", ip)
		}
		seen[ip] = true
		if lab0.Contains(ip) || clusterCIDR.Contains(ip) {
			t.Errorf("extra node IP %v is in the lab's node subnets or the cluster CIDR", ip)
		}
	}
	for _, n := range lab.CheckNodes() {
		if seen[n.IP] {
			t.Errorf("extra node IP %v is the IP of lab node %s", n.IP, n.Name)
		}
	}
}

func TestExtraNATEntriesAreDistinct(t *testing.T) {
	pod := netip.MustParseAddr("10.200.0.250")
	node := netip.MustParseAddr("10.0.1.20")
	entries := extraNATEntries(pod, node)
	if len(entries) != 2*extraNATFlows {
		t.Fatalf("%d entries, want %d", len(entries), 2*extraNATFlows)
	}
	type key struct {
		src, dst netip.AddrPort
		dir      uint8
	}
	seen := map[key]bool{}
	for _, e := range entries {
		k := key{e.Src, e.Dst, uint8(e.Direction)}
		if seen[k] {
			t.Fatalf("NAT key %+v appears twice", k)
		}
		seen[k] = true
		remote := e.Dst
		if e.Direction == 1 {
			remote = e.Src
		}
		if remote.Addr() == lab.InternetIP {
			t.Errorf("entry %+v uses the lab's internet host, whose flows are real", e)
		}
	}
}
