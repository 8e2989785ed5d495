package packettest

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/gopacket/layers"
)

func testFrame(proto layers.IPProtocol) Frame {
	return Frame{
		SrcMAC:   net.HardwareAddr{2, 0, 0, 0, 0, 1},
		DstMAC:   net.HardwareAddr{2, 0, 0, 0, 0, 2},
		Src:      netip.MustParseAddr("198.51.100.1"),
		Dst:      netip.MustParseAddr("203.0.113.1"),
		TTL:      64,
		Proto:    proto,
		SrcPort:  1234,
		DstPort:  80,
		TCPFlags: SYN,
		ICMPType: layers.ICMPv4TypeEchoRequest,
		ICMPID:   7,
		Payload:  []byte("odd"),
	}
}

func TestCheckIPv4ChecksumsValid(t *testing.T) {
	for _, proto := range []layers.IPProtocol{
		layers.IPProtocolTCP, layers.IPProtocolUDP, layers.IPProtocolICMPv4,
	} {
		frame := Build(t, testFrame(proto))
		if err := CheckIPv4Checksums(frame); err != nil {
			t.Errorf("%v: %v", proto, err)
		}
	}
}

func TestCheckIPv4ChecksumsCorrupt(t *testing.T) {
	cases := []struct {
		name  string
		proto layers.IPProtocol
		off   int // byte to flip, from the start of the frame
		want  string
	}{
		{"IPv4 header", layers.IPProtocolTCP, 14 + 8, "IPv4 header checksum"},
		{"TCP port", layers.IPProtocolTCP, 14 + 20 + 1, "protocol 6"},
		{"UDP payload", layers.IPProtocolUDP, 14 + 20 + 8, "protocol 17"},
		{"ICMP identifier", layers.IPProtocolICMPv4, 14 + 20 + 5, "protocol 1"},
		// The pseudo-header covers the addresses; the IPv4 checksum breaks too.
		{"source address under TCP", layers.IPProtocolTCP, 14 + 12, "protocol 6"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			frame := Build(t, testFrame(c.proto))
			frame[c.off] ^= 0x40
			err := CheckIPv4Checksums(frame)
			if err == nil {
				t.Fatalf("corrupt frame passed the check")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
		})
	}
}

func TestBuildZeroUDPChecksum(t *testing.T) {
	f := testFrame(layers.IPProtocolUDP)
	f.ZeroUDPChecksum = true
	frame := Build(t, f)
	off := UDPChecksumOffset(frame)
	if sum := be16At(frame, off); sum != 0 {
		t.Errorf("UDP checksum %#04x, want zero", sum)
	}
	if err := CheckIPv4Checksums(frame); err != nil {
		t.Errorf("zero UDP checksum rejected: %v", err)
	}
}

func TestDiff(t *testing.T) {
	if d := Diff([]byte{1, 2, 3}, []byte{1, 2, 3}); d != "" {
		t.Errorf("equal frames: diff %q, want empty", d)
	}
	d := Diff([]byte{1, 2, 3}, []byte{1, 9})
	for _, want := range []string{"length 2, want 3", "byte 1: 0x09, want 0x02"} {
		if !strings.Contains(d, want) {
			t.Errorf("diff %q lacks %q", d, want)
		}
	}
}
