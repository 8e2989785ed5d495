package config

import (
	"net/netip"
	"strings"
	"testing"
)

const kubernetesConfig = `nodeName: worker-0
clusterCIDR: 10.200.0.0/16
kubernetes:
  kubeconfig: /var/lib/ferry/kubeconfig
`

func TestParseKubernetesSource(t *testing.T) {
	cfg, err := Parse([]byte(kubernetesConfig))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if cfg.Kubernetes == nil {
		t.Fatal("Kubernetes is nil, want the kubernetes source")
	}
	if cfg.Kubernetes.Kubeconfig != "/var/lib/ferry/kubeconfig" {
		t.Errorf("Kubeconfig = %q, want /var/lib/ferry/kubeconfig", cfg.Kubernetes.Kubeconfig)
	}
	if len(cfg.Nodes) != 0 {
		t.Errorf("Nodes = %v, want none with the kubernetes source", cfg.Nodes)
	}
}

func TestParseKubernetesInCluster(t *testing.T) {
	cfg, err := Parse([]byte("nodeName: worker-0\nclusterCIDR: 10.200.0.0/16\nkubernetes: {}\n"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if cfg.Kubernetes == nil || cfg.Kubernetes.Kubeconfig != "" {
		t.Errorf("Kubernetes = %+v, want an empty kubeconfig for in-cluster credentials",
			cfg.Kubernetes)
	}
}

func TestParseKubernetesRelativeKubeconfig(t *testing.T) {
	yaml := strings.Replace(kubernetesConfig, "/var/lib/ferry/kubeconfig", "kubeconfig", 1)
	_, err := Parse([]byte(yaml))
	requireProblem(t, err, "kubernetes.kubeconfig", "not an absolute path")
}

func TestParseMissingNodesMentionsKubernetes(t *testing.T) {
	_, err := Parse([]byte("nodeName: worker-0\nclusterCIDR: 10.200.0.0/16\n"))
	requireProblem(t, err, "nodes", "kubernetes: {}")
}

func TestWithNodesCopiesConfig(t *testing.T) {
	cfg, err := Parse([]byte(kubernetesConfig))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	nodes := []Node{
		{"worker-0", netip.MustParseAddr("10.0.1.20"), netip.MustParsePrefix("10.200.0.0/24")},
		{"worker-1", netip.MustParseAddr("10.0.1.21"), netip.MustParsePrefix("10.200.1.0/24")},
	}
	full := cfg.WithNodes(nodes)
	if got := full.Self(); got != nodes[0] {
		t.Errorf("Self() = %+v, want %+v", got, nodes[0])
	}
	if got := full.RemoteNodes(); len(got) != 1 || got[0] != nodes[1] {
		t.Errorf("RemoteNodes() = %+v, want [%+v]", got, nodes[1])
	}
	if len(cfg.Nodes) != 0 {
		t.Errorf("WithNodes changed the original config's nodes to %v", cfg.Nodes)
	}
}

// requireProblem fails the test unless err is an *Error with a problem of
// field whose message contains text.
func requireProblem(t *testing.T, err error, field, text string) {
	t.Helper()
	e, ok := err.(*Error)
	if !ok {
		t.Fatalf("error = %v, want an *Error", err)
	}
	for _, p := range e.Problems {
		if p.Field == field && strings.Contains(p.Message, text) {
			return
		}
	}
	t.Errorf("no problem of %s containing %q in:\n%v", field, text, err)
}
