package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzParse checks that Parse never panics, that every rejection is an
// *Error with problems, and that every accepted config keeps the rules of
// validate and survives a round trip through YAML. The seed corpus is in
// testdata/fuzz/FuzzParse, beside the example files of testdata.
func FuzzParse(f *testing.F) {
	examples, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, path := range examples {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(baseConfig))

	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			checkRejection(t, err)
			return
		}
		if err := checkInvariants(cfg); err != nil {
			t.Fatalf("accepted config breaks a rule: %v\ninput:\n%s", err, data)
		}
		again, err := Parse(encode(t, cfg))
		if err != nil {
			t.Fatalf("re-encoded config is invalid: %v\ninput:\n%s", err, data)
		}
		if !reflect.DeepEqual(cfg, again) {
			t.Fatalf("round trip changed the config:\n%+v\n%+v", cfg, again)
		}
	})
}

func checkRejection(t *testing.T, err error) {
	t.Helper()
	var cfgErr *Error
	if !errors.As(err, &cfgErr) {
		t.Fatalf("Parse error %v is a %T, want *Error", err, err)
	}
	if len(cfgErr.Problems) == 0 {
		t.Fatalf("Parse returned an *Error without problems")
	}
	for _, p := range cfgErr.Problems {
		if p.Message == "" {
			t.Fatalf("problem of field %q has no message", p.Field)
		}
	}
}

// checkInvariants verifies the rules that validate enforces.
func checkInvariants(c *Config) error {
	if !c.ClusterCIDR.Addr().Is4() || c.ClusterCIDR.Masked() != c.ClusterCIDR {
		return fmt.Errorf("cluster CIDR %s", c.ClusterCIDR)
	}
	self := c.Self()
	if c.NodeIP.IsValid() && c.NodeIP != self.IP {
		return fmt.Errorf("node IP %s differs from the node entry's %s", c.NodeIP, self.IP)
	}
	names := map[string]bool{}
	for i, n := range c.Nodes {
		if names[n.Name] || !isNodeName(n.Name) {
			return fmt.Errorf("node name %q", n.Name)
		}
		names[n.Name] = true
		if !n.IP.Is4() || c.ClusterCIDR.Contains(n.IP) {
			return fmt.Errorf("node IP %s", n.IP)
		}
		if n.PodCIDR.Bits() < c.ClusterCIDR.Bits() || n.PodCIDR.Bits() > maxPodCIDRBits ||
			!c.ClusterCIDR.Contains(n.PodCIDR.Addr()) {
			return fmt.Errorf("pod CIDR %s", n.PodCIDR)
		}
		for _, other := range c.Nodes[:i] {
			if other.IP == n.IP || other.PodCIDR.Overlaps(n.PodCIDR) {
				return fmt.Errorf("nodes %s and %s share an address", other.Name, n.Name)
			}
		}
	}
	m := c.Masquerade
	if m.PortMin < 1 || m.PortMin > m.PortMax {
		return fmt.Errorf("port range %d-%d", m.PortMin, m.PortMax)
	}
	if m.NATTableSize < MinNATTableSize || m.NATTableSize > MaxNATTableSize {
		return fmt.Errorf("NAT table size %d", m.NATTableSize)
	}
	for _, dir := range []string{c.BPFFSDir, c.CNI.ConfDir, c.CNI.BinDir, c.CNI.IPAMDataDir} {
		if !filepath.IsAbs(dir) || filepath.Clean(dir) != dir {
			return fmt.Errorf("path %q", dir)
		}
	}
	return nil
}

// encode writes c back as a configuration file.
func encode(t *testing.T, c *Config) []byte {
	t.Helper()
	raw := fileConfig{
		NodeName:      c.NodeName,
		ClusterCIDR:   c.ClusterCIDR.String(),
		Device:        c.Device,
		AttachMode:    string(c.AttachMode),
		PodAttachMode: string(c.PodAttachMode),
		Masquerade: fileMasquerade{
			Enabled:      &c.Masquerade.Enabled,
			NATTableSize: new(int64(c.Masquerade.NATTableSize)),
			PortRange:    fmt.Sprintf("%d-%d", c.Masquerade.PortMin, c.Masquerade.PortMax),
			Timeouts: fileNATTimeouts{
				TCPHandshake:   c.Masquerade.Timeouts.TCPHandshake.String(),
				TCPEstablished: c.Masquerade.Timeouts.TCPEstablished.String(),
				TCPClosing:     c.Masquerade.Timeouts.TCPClosing.String(),
				UDP:            c.Masquerade.Timeouts.UDP.String(),
				ICMP:           c.Masquerade.Timeouts.ICMP.String(),
			},
		},
		BPFFSDir: c.BPFFSDir,
		CNI: fileCNI{
			ConfDir:     c.CNI.ConfDir,
			BinDir:      c.CNI.BinDir,
			ConfName:    c.CNI.ConfName,
			IPAMDataDir: c.CNI.IPAMDataDir,
		},
		MetricsAddress: c.MetricsAddress,
	}
	if c.NodeIP.IsValid() {
		raw.NodeIP = c.NodeIP.String()
	}
	for _, n := range c.Nodes {
		raw.Nodes = append(raw.Nodes, fileNode{n.Name, n.IP.String(), n.PodCIDR.String()})
	}
	for _, p := range c.Masquerade.ExcludeCIDRs {
		raw.Masquerade.ExcludeCIDRs = append(raw.Masquerade.ExcludeCIDRs, p.String())
	}
	data, err := yaml.Marshal(&raw)
	if err != nil {
		t.Fatalf("encode config: %v", err)
	}
	return data
}
