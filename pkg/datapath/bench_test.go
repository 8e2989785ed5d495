package datapath

import (
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestPutNATEntriesRoundTrip(t *testing.T) {
	requireRoot(t)
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	dir := "/sys/fs/bpf/ferry-test-" + hex.EncodeToString(suffix)
	d, err := Load(dir, LoadOptions{NATEntries: 1024})
	if err != nil {
		t.Fatalf("load dataplane under %s: %v", dir, err)
	}
	t.Cleanup(func() {
		d.Close()
		_ = os.RemoveAll(dir)
	})

	now := monotonicNow()
	entries := []NATEntry{{
		Proto:       unix.IPPROTO_TCP,
		Direction:   NATEgress,
		Src:         netip.MustParseAddrPort("10.200.0.250:40000"),
		Dst:         netip.MustParseAddrPort("198.51.100.100:443"),
		TranslateTo: netip.MustParseAddrPort("10.0.1.20:10000"),
		TCPFlags:    tcpSYN,
		Created:     now,
		LastSeen:    now + time.Second,
	}, {
		Proto:       unix.IPPROTO_TCP,
		Direction:   NATIngress,
		Src:         netip.MustParseAddrPort("198.51.100.100:443"),
		Dst:         netip.MustParseAddrPort("10.0.1.20:10000"),
		TranslateTo: netip.MustParseAddrPort("10.200.0.250:40000"),
		Created:     now,
		LastSeen:    now,
	}}
	if err := d.PutNATEntries(entries); err != nil {
		t.Fatalf("put NAT entries: %v", err)
	}
	got, err := d.NATEntries()
	if err != nil {
		t.Fatalf("list NAT entries: %v", err)
	}
	if len(got) != len(entries) {
		t.Fatalf("NAT table has %d entries after the put, want %d", len(got), len(entries))
	}
	for _, want := range entries {
		found := false
		for _, e := range got {
			found = found || e == want
		}
		if !found {
			t.Errorf("NAT table lacks %+v; it has %+v", want, got)
		}
	}

	if err := d.DeleteNATEntries(append(entries, entries[0])); err != nil {
		t.Fatalf("delete NAT entries, one of them twice: %v", err)
	}
	got, err = d.NATEntries()
	if err != nil {
		t.Fatalf("list NAT entries: %v", err)
	}
	if len(got) != 0 {
		t.Errorf("NAT table has %d entries after the delete, want 0: %+v", len(got), got)
	}
}

func TestPutNATEntriesRejectsIPv6(t *testing.T) {
	var m Maps // the check comes before any map access
	err := m.PutNATEntries([]NATEntry{{
		Src:         netip.MustParseAddrPort("[2001:db8::1]:1"),
		Dst:         netip.MustParseAddrPort("198.51.100.100:443"),
		TranslateTo: netip.MustParseAddrPort("10.0.1.20:10000"),
	}})
	if err == nil {
		t.Fatal("put of an IPv6 NAT entry succeeded, want an error")
	}
}
