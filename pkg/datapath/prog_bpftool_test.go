package datapath

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestProgMapsDumpWithBTF requires `bpftool map dump` to print every map with
// the field names of its BTF key and value types, which operators rely on.
func TestProgMapsDumpWithBTF(t *testing.T) {
	e := newProgEnv(t)
	bpftool, err := exec.LookPath("bpftool")
	if err != nil {
		t.Skip("skipping: bpftool is not installed")
	}
	// A translated SYN fills nat_table and a counter.
	e.checkSNAT(t, change(synFlow(e.podA.IP, 40000), func(f *natFlow) { f.keepPort = true }))

	maps := map[string][]string{
		"node_routes":  {"prefixlen", "addr", "node_ip", "flags"},
		"masq_exclude": {"prefixlen", "addr", "flags"},
		"endpoints":    {"addr", "ifindex", "pod_mac", "host_mac"},
		"node_config": {"node_ip", "pod_net", "pod_mask", "uplink_ifindex", "flags",
			"nat_port_min", "nat_port_max"},
		"nat_table": {"saddr", "daddr", "sport", "dport", "proto", "dir", "port",
			"tcp_flags", "created", "last_seen"},
		"counters": {"packets", "bytes"},
	}
	for name, fields := range maps {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(e.dp.Dir, name)
			out, err := exec.Command(bpftool, "map", "dump", "pinned", path).CombinedOutput()
			if err != nil {
				t.Fatalf("bpftool map dump pinned %s: %v\n%s", path, err, out)
			}
			for _, field := range fields {
				if !strings.Contains(string(out), `"`+field+`"`) {
					t.Errorf("dump of %s lacks the field %q:\n%s", name, field, out)
				}
			}
		})
	}
}
