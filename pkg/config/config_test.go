package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ferrynet/ferry/pkg/datapath"
)

func TestLoadFullConfig(t *testing.T) {
	cfg, err := Load("testdata/full.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := &Config{
		NodeName:      "worker-0",
		ClusterCIDR:   netip.MustParsePrefix("10.200.0.0/16"),
		Device:        "eth0",
		NodeIP:        netip.MustParseAddr("10.0.1.20"),
		AttachMode:    datapath.AttachClsact,
		PodAttachMode: datapath.AttachClsact,
		Nodes: []Node{
			{"worker-0", netip.MustParseAddr("10.0.1.20"), netip.MustParsePrefix("10.200.0.0/24")},
			{"worker-1", netip.MustParseAddr("10.0.1.21"), netip.MustParsePrefix("10.200.1.0/24")},
			{"worker-2", netip.MustParseAddr("10.0.2.20"), netip.MustParsePrefix("10.200.2.0/24")},
		},
		Masquerade: Masquerade{
			Enabled: false,
			ExcludeCIDRs: []netip.Prefix{
				netip.MustParsePrefix("192.168.0.0/16"),
				netip.MustParsePrefix("203.0.113.0/24"),
			},
			NATTableSize: 65536,
			PortMin:      40000,
			PortMax:      50000,
			Timeouts: datapath.NATTimeouts{TCPHandshake: 30 * time.Second,
				TCPEstablished: 150 * time.Minute, TCPClosing: 90 * time.Second,
				UDP: 3 * time.Minute, ICMP: 10 * time.Second},
		},
		BPFFSDir: "/sys/fs/bpf/ferry-w0",
		CNI: CNI{
			ConfDir:     "/etc/cni/net.d",
			BinDir:      "/usr/lib/cni",
			ConfName:    "20-ferry.conflist",
			IPAMDataDir: "/var/lib/ferry/ipam",
		},
		MetricsAddress: "0.0.0.0:9402",
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Load returned\n%+v\nwant\n%+v", cfg, want)
	}
}

func TestLoadMinimalConfigDefaults(t *testing.T) {
	cfg, err := Load("testdata/minimal.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := &Config{
		NodeName:      "worker-1",
		ClusterCIDR:   netip.MustParsePrefix("10.200.0.0/16"),
		AttachMode:    datapath.AttachAuto,
		PodAttachMode: datapath.AttachClsact,
		Nodes: []Node{
			{"worker-0", netip.MustParseAddr("10.0.1.20"), netip.MustParsePrefix("10.200.0.0/24")},
			{"worker-1", netip.MustParseAddr("10.0.1.21"), netip.MustParsePrefix("10.200.1.0/24")},
		},
		Masquerade: Masquerade{
			Enabled:      true,
			NATTableSize: 262144,
			PortMin:      32768,
			PortMax:      65535,
			Timeouts:     datapath.DefaultNATTimeouts,
		},
		BPFFSDir: "/sys/fs/bpf/ferry",
		CNI: CNI{
			ConfDir:     "/etc/cni/net.d",
			BinDir:      "/opt/cni/bin",
			ConfName:    "10-ferry.conflist",
			IPAMDataDir: "/var/lib/cni/networks",
		},
		MetricsAddress: "127.0.0.1:9402",
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Load returned\n%+v\nwant\n%+v", cfg, want)
	}
	if got := cfg.NATEntries(); got != 524288 {
		t.Errorf("NATEntries() = %d, want 524288", got)
	}
}

func TestConfigSelfAndRemoteNodes(t *testing.T) {
	cfg, err := Load("testdata/full.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if self := cfg.Self(); self.Name != "worker-0" || self.IP != netip.MustParseAddr("10.0.1.20") {
		t.Errorf("Self() = %+v, want worker-0 with 10.0.1.20", self)
	}
	var names []string
	for _, n := range cfg.RemoteNodes() {
		names = append(names, n.Name)
	}
	if want := []string{"worker-1", "worker-2"}; !reflect.DeepEqual(names, want) {
		t.Errorf("RemoteNodes() names = %v, want %v", names, want)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "absent.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load error = %v, want one wrapping os.ErrNotExist", err)
	}
}

func TestLoadErrorNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ferryd.yaml")
	if err := os.WriteFile(path, []byte("nodeName: Worker_0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	var cfgErr *Error
	if !errors.As(err, &cfgErr) {
		t.Fatalf("Load error = %v (%T), want *Error", err, err)
	}
	if cfgErr.File != path {
		t.Errorf("Error.File = %q, want %q", cfgErr.File, path)
	}
	if !strings.HasPrefix(err.Error(), "invalid config "+path+":\n") {
		t.Errorf("Error() = %q, want it to start with the file name and a line break", err)
	}
}

func TestParseCollectsEveryProblem(t *testing.T) {
	input := `
nodeName: worker-9
clusterCIDR: 10.200.0.0/16
attachMode: xdp
nodes:
  - {name: worker-0, ip: 10.0.1.20, podCIDR: 10.300.0.0/24}
  - {name: worker-1, ip: fd00::1, podCIDR: 10.200.1.0/24}
masquerade:
  portRange: 9-1
bpffsDir: sys/fs/bpf/ferry
`
	_, err := Parse([]byte(input))
	var cfgErr *Error
	if !errors.As(err, &cfgErr) {
		t.Fatalf("Parse error = %v (%T), want *Error", err, err)
	}
	var fields []string
	for _, p := range cfgErr.Problems {
		fields = append(fields, p.Field)
	}
	want := []string{
		"attachMode", "nodes[0].podCIDR", "nodes[1].ip", "nodeName",
		"masquerade.portRange", "bpffsDir",
	}
	if !reflect.DeepEqual(fields, want) {
		t.Errorf("problem fields = %q, want %q\n%v", fields, want, err)
	}
}

// problemCase is a config that has exactly one problem.
type problemCase struct {
	name string
	// edit turns the valid base config into the invalid one.
	edit func(string) string
	// field is the path that the problem must name.
	field string
	// text must appear in the problem's message: the value or the fix.
	text []string
}

// baseConfig is valid; every problemCase breaks one rule of it.
const baseConfig = `nodeName: worker-0
clusterCIDR: 10.200.0.0/16
nodes:
  - {name: worker-0, ip: 10.0.1.20, podCIDR: 10.200.0.0/24}
  - {name: worker-1, ip: 10.0.1.21, podCIDR: 10.200.1.0/24}
`

func replace(old, new string) func(string) string {
	return func(s string) string {
		if !strings.Contains(s, old) {
			panic("base config does not contain " + old)
		}
		return strings.Replace(s, old, new, 1)
	}
}

func appendLines(lines string) func(string) string {
	return func(s string) string { return s + lines }
}

var problemCases = []problemCase{
	// The file as a whole.
	{"syntax error", appendLines("nodes: [\n"), "", []string{"invalid YAML"}},
	{"two documents", appendLines("---\nnodeName: worker-1\n"), "",
		[]string{"more than one YAML document"}},
	{"duplicate key", appendLines("clusterCIDR: 10.200.0.0/16\n"), "",
		[]string{"invalid YAML", `"clusterCIDR" already defined`}},
	{"top level not a mapping", func(string) string { return "- a\n- b\n" }, "",
		[]string{"want a mapping", "nodeName"}},
	{"unknown top-level field", appendLines("nodename: worker-0\n"), "nodename",
		[]string{"unknown field (line 6)", `did you mean "nodeName"`}},
	{"unknown node field", replace("podCIDR: 10.200.1.0/24", "podCIDR: 10.200.1.0/24, zone: a"),
		"nodes[1].zone", []string{"unknown field", "name, ip, podCIDR"}},
	{"unknown masquerade field", appendLines("masquerade:\n  exclude: []\n"),
		"masquerade.exclude", []string{"unknown field", "excludeCIDRs"}},
	{"unknown cni field", appendLines("cni:\n  confdir: /etc/cni/net.d\n"), "cni.confdir",
		[]string{`did you mean "confDir"`}},
	{"string for list", replace(baseConfig[strings.Index(baseConfig, "nodes:"):], "nodes: all\n"),
		"nodes",
		[]string{`"all"`, "a list of nodes"}},
	{"list for string", replace("clusterCIDR: 10.200.0.0/16", "clusterCIDR: [10.200.0.0/16]"),
		"clusterCIDR", []string{"invalid value a list", "want a string"}},
	{"text for integer", appendLines("masquerade:\n  natTableSize: many\n"),
		"masquerade.natTableSize", []string{`"many"`, "want an integer"}},
	{"text for bool", appendLines("masquerade:\n  enabled: maybe\n"),
		"masquerade.enabled", []string{`"maybe"`, "true or false"}},

	// nodeName.
	{"node name missing", replace("nodeName: worker-0\n", ""), "nodeName", []string{"missing"}},
	{"node name uppercase", replace("nodeName: worker-0", "nodeName: Worker-0"), "nodeName",
		[]string{`"Worker-0"`, "lowercase"}},
	{"node name not listed", replace("nodeName: worker-0", "nodeName: worker-7"), "nodeName",
		[]string{`"worker-7"`, "not listed under nodes", "add an entry"}},

	// clusterCIDR.
	{"cluster CIDR missing", replace("clusterCIDR: 10.200.0.0/16\n", ""), "clusterCIDR",
		[]string{"missing"}},
	{"cluster CIDR invalid", replace("10.200.0.0/16", "10.200.0.0/33"), "clusterCIDR",
		[]string{`"10.200.0.0/33"`, "such as"}},
	{"cluster CIDR IPv6", replace("10.200.0.0/16", "fd00:200::/56"), "clusterCIDR",
		[]string{`"fd00:200::/56"`, "IPv4 only"}},
	{"cluster CIDR host bits", replace("10.200.0.0/16", "10.200.0.1/16"), "clusterCIDR",
		[]string{`"10.200.0.1/16"`, "10.200.0.0/16"}},

	// device and nodeIP.
	{"device too long", appendLines("device: a-very-long-ifname0\n"), "device",
		[]string{`"a-very-long-ifname0"`}},
	{"device with slash", appendLines("device: eth/0\n"), "device", []string{`"eth/0"`}},
	{"node IP invalid", appendLines("nodeIP: 10.0.1\n"), "nodeIP",
		[]string{`"10.0.1"`, "IPv4 address"}},
	{"node IP IPv6", appendLines("nodeIP: fd00::20\n"), "nodeIP",
		[]string{`"fd00::20"`, "IPv4 only"}},
	{"node IP differs from entry", appendLines("nodeIP: 10.0.1.99\n"), "nodeIP",
		[]string{"10.0.1.99", "nodes[0].ip 10.0.1.20", "make them equal"}},
	{"node IP loopback", appendLines("nodeIP: 127.0.0.1\n"), "nodeIP",
		[]string{"127.0.0.1", "not a unicast address"}},

	// attachMode.
	{"attach mode invalid", appendLines("attachMode: xdp\n"), "attachMode",
		[]string{`"xdp"`, "auto, tcx or clsact"}},
	{"pod attach mode invalid", appendLines("podAttachMode: auto\n"), "podAttachMode",
		[]string{`"auto"`, "clsact or tcx"}},
	{"pod attach mode tcx with clsact uplink",
		appendLines("attachMode: clsact\npodAttachMode: tcx\n"), "podAttachMode",
		[]string{"attachMode is clsact", "set attachMode to auto or tcx"}},

	// nodes.
	{"nodes missing", replace(baseConfig[strings.Index(baseConfig, "nodes:"):], ""), "nodes",
		[]string{"missing"}},
	{"node entry name missing", replace("name: worker-1, ", ""), "nodes[1].name",
		[]string{"missing"}},
	{"node entry name invalid", replace("name: worker-1", "name: worker_1"), "nodes[1].name",
		[]string{`"worker_1"`}},
	{"duplicate node name", replace("name: worker-1", "name: worker-0"), "nodes[1].name",
		[]string{`"worker-0"`, "nodes[0].name"}},
	{"node IP missing", replace("ip: 10.0.1.21, ", ""), "nodes[1].ip", []string{"missing"}},
	{"node IP not an address", replace("10.0.1.21", "10.0.1.x"), "nodes[1].ip",
		[]string{`"10.0.1.x"`}},
	{"node IP is IPv6", replace("10.0.1.21", "fd00::21"), "nodes[1].ip",
		[]string{`"fd00::21"`, "IPv4 only"}},
	{"node IP is multicast", replace("10.0.1.21", "224.0.0.1"), "nodes[1].ip",
		[]string{"224.0.0.1", "unicast"}},
	{"node IP inside cluster CIDR", replace("10.0.1.21", "10.200.9.1"), "nodes[1].ip",
		[]string{"10.200.9.1", "inside clusterCIDR 10.200.0.0/16"}},
	{"duplicate node IP", replace("10.0.1.21", "10.0.1.20"), "nodes[1].ip",
		[]string{"10.0.1.20", "nodes[0].ip"}},
	{"pod CIDR missing", replace(", podCIDR: 10.200.1.0/24", ""), "nodes[1].podCIDR",
		[]string{"missing"}},
	{"pod CIDR invalid", replace("10.200.1.0/24", "10.200.1.0"), "nodes[1].podCIDR",
		[]string{`"10.200.1.0"`, "such as"}},
	{"pod CIDR IPv6", replace("10.200.1.0/24", "fd00:200:1::/64"), "nodes[1].podCIDR",
		[]string{`"fd00:200:1::/64"`, "IPv4 only"}},
	{"pod CIDR host bits", replace("10.200.1.0/24", "10.200.1.1/24"), "nodes[1].podCIDR",
		[]string{"10.200.1.0/24"}},
	{"pod CIDR outside cluster", replace("10.200.1.0/24", "10.201.1.0/24"), "nodes[1].podCIDR",
		[]string{"10.201.1.0/24", "outside clusterCIDR"}},
	{"pod CIDR wider than cluster", replace("10.200.1.0/24", "10.0.0.0/8"), "nodes[1].podCIDR",
		[]string{"10.0.0.0/8", "outside clusterCIDR"}},
	{"pod CIDR too small", replace("10.200.1.0/24", "10.200.1.0/31"), "nodes[1].podCIDR",
		[]string{"10.200.1.0/31", "/30"}},
	{"pod CIDRs overlap", replace("10.200.1.0/24", "10.200.0.128/25"), "nodes[1].podCIDR",
		[]string{"10.200.0.128/25", "nodes[0].podCIDR 10.200.0.0/24"}},
	{"kubernetes empty without nodes", func(string) string {
		return "nodeName: worker-0\nclusterCIDR: 10.200.0.0/16\nkubernetes:\n"
	}, "kubernetes", []string{"kubernetes: {}", "kubeconfig: FILE"}},
	{"kubernetes and nodes", appendLines("kubernetes:\n  kubeconfig: /var/lib/ferry/kubeconfig\n"),
		"nodes", []string{"one source"}},

	// masquerade.
	{"exclude CIDR invalid", appendLines("masquerade:\n  excludeCIDRs: [192.168.0.0/16, x]\n"),
		"masquerade.excludeCIDRs[1]", []string{`"x"`}},
	{"exclude CIDR IPv6", appendLines("masquerade:\n  excludeCIDRs: [fd00::/8]\n"),
		"masquerade.excludeCIDRs[0]", []string{"IPv4 only"}},
	{"NAT table too small", appendLines("masquerade:\n  natTableSize: 10\n"),
		"masquerade.natTableSize", []string{"10", "1024"}},
	{"NAT table too large", appendLines("masquerade:\n  natTableSize: 4294967296\n"),
		"masquerade.natTableSize", []string{"4294967296", "16777216"}},
	{"port range one number", appendLines("masquerade:\n  portRange: \"40000\"\n"),
		"masquerade.portRange", []string{`"40000"`, "MIN-MAX"}},
	{"port range reversed", appendLines("masquerade:\n  portRange: 60000-40000\n"),
		"masquerade.portRange", []string{`"60000-40000"`}},
	{"port range zero", appendLines("masquerade:\n  portRange: 0-100\n"),
		"masquerade.portRange", []string{`"0-100"`}},
	{"port range above 65535", appendLines("masquerade:\n  portRange: 40000-70000\n"),
		"masquerade.portRange", []string{`"40000-70000"`}},

	// Paths.
	{"relative bpffs dir", appendLines("bpffsDir: ferry\n"), "bpffsDir",
		[]string{`"ferry"`, "absolute path"}},
	{"relative conf dir", appendLines("cni:\n  confDir: net.d\n"), "cni.confDir",
		[]string{`"net.d"`, "absolute path"}},
	{"relative bin dir", appendLines("cni:\n  binDir: ./bin\n"), "cni.binDir",
		[]string{`"./bin"`}},
	{"relative IPAM data dir", appendLines("cni:\n  ipamDataDir: networks\n"), "cni.ipamDataDir",
		[]string{`"networks"`}},
	{"conf name with slash", appendLines("cni:\n  confName: net.d/10-ferry.conflist\n"),
		"cni.confName", []string{`"net.d/10-ferry.conflist"`}},
	{"conf name without conflist", appendLines("cni:\n  confName: 10-ferry.conf\n"),
		"cni.confName", []string{`"10-ferry.conf"`, ".conflist"}},

	// metricsAddress.
	{"metrics address without port", appendLines("metricsAddress: 127.0.0.1\n"),
		"metricsAddress", []string{`"127.0.0.1"`, "HOST:PORT"}},
	{"metrics port invalid", appendLines("metricsAddress: 127.0.0.1:99999\n"),
		"metricsAddress", []string{`"99999"`}},
	{"metrics host invalid", appendLines("metricsAddress: \"metrics host:9402\"\n"),
		"metricsAddress", []string{`"metrics host"`}},
}

func TestParseRejectsInvalidSetting(t *testing.T) {
	if _, err := Parse([]byte(baseConfig)); err != nil {
		t.Fatalf("base config is invalid: %v", err)
	}
	for _, tc := range problemCases {
		t.Run(tc.name, func(t *testing.T) {
			input := tc.edit(baseConfig)
			cfg, err := Parse([]byte(input))
			if cfg != nil {
				t.Errorf("Parse returned a config for invalid input")
			}
			var cfgErr *Error
			if !errors.As(err, &cfgErr) {
				t.Fatalf("Parse error = %v (%T), want *Error\ninput:\n%s", err, err, input)
			}
			if len(cfgErr.Problems) != 1 {
				t.Fatalf("got %d problems, want 1:\n%v\ninput:\n%s",
					len(cfgErr.Problems), err, input)
			}
			p := cfgErr.Problems[0]
			if p.Field != tc.field {
				t.Errorf("problem field = %q, want %q (%s)", p.Field, tc.field, p)
			}
			for _, text := range tc.text {
				if !strings.Contains(p.Message, text) {
					t.Errorf("problem message %q does not contain %q", p.Message, text)
				}
			}
		})
	}
}

func TestParseAcceptsValidVariants(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(string) string
		check func(*testing.T, *Config)
	}{
		{"empty port range uses default", appendLines("masquerade:\n  portRange: \"\"\n"),
			func(t *testing.T, c *Config) {
				if c.Masquerade.PortMin != 32768 || c.Masquerade.PortMax != 65535 {
					t.Errorf("port range = %d-%d, want 32768-65535",
						c.Masquerade.PortMin, c.Masquerade.PortMax)
				}
			}},
		{"single port range", appendLines("masquerade:\n  portRange: 40000-40000\n"),
			func(t *testing.T, c *Config) {
				if c.Masquerade.PortMin != 40000 || c.Masquerade.PortMax != 40000 {
					t.Errorf("port range = %d-%d, want 40000-40000",
						c.Masquerade.PortMin, c.Masquerade.PortMax)
				}
			}},
		{"empty kubernetes section", appendLines("kubernetes:\n"),
			func(t *testing.T, c *Config) {}},
		{"path cleaned", appendLines("bpffsDir: /sys/fs/bpf//ferry/\n"),
			func(t *testing.T, c *Config) {
				if c.BPFFSDir != "/sys/fs/bpf/ferry" {
					t.Errorf("BPFFSDir = %q, want /sys/fs/bpf/ferry", c.BPFFSDir)
				}
			}},
		{"metrics on every address", appendLines("metricsAddress: \":9402\"\n"),
			func(t *testing.T, c *Config) {
				if c.MetricsAddress != ":9402" {
					t.Errorf("MetricsAddress = %q, want :9402", c.MetricsAddress)
				}
			}},
		{"pod CIDR equal to cluster", func(string) string {
			return "nodeName: a\nclusterCIDR: 10.200.0.0/24\n" +
				"nodes: [{name: a, ip: 10.0.1.20, podCIDR: 10.200.0.0/24}]\n"
		}, func(t *testing.T, c *Config) {
			if len(c.RemoteNodes()) != 0 {
				t.Errorf("RemoteNodes() = %v, want none", c.RemoteNodes())
			}
		}},
		{"node IP equal to entry", appendLines("nodeIP: 10.0.1.20\n"),
			func(t *testing.T, c *Config) {
				if c.NodeIP != netip.MustParseAddr("10.0.1.20") {
					t.Errorf("NodeIP = %s, want 10.0.1.20", c.NodeIP)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tc.edit(baseConfig)))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tc.check(t, cfg)
		})
	}
}

func TestParseEmptyInputListsRequiredSettings(t *testing.T) {
	_, err := Parse(nil)
	var cfgErr *Error
	if !errors.As(err, &cfgErr) {
		t.Fatalf("Parse error = %v (%T), want *Error", err, err)
	}
	var fields []string
	for _, p := range cfgErr.Problems {
		fields = append(fields, p.Field)
	}
	if want := []string{"nodeName", "clusterCIDR", "nodes"}; !reflect.DeepEqual(fields, want) {
		t.Errorf("problem fields = %q, want %q", fields, want)
	}
}

func TestErrorMessageFormat(t *testing.T) {
	single := &Error{File: "/etc/ferry/ferryd.yaml", Problems: []Problem{{"nodeName", "missing"}}}
	if got, want := single.Error(), "invalid config /etc/ferry/ferryd.yaml: nodeName: missing"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	multiple := &Error{Problems: []Problem{{"nodeName", "missing"}, {"", "invalid YAML"}}}
	if got, want := multiple.Error(), "invalid config:\n  nodeName: missing\n  invalid YAML"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
