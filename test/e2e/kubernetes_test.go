package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrynet/ferry/pkg/nodesource/nodesourcetest"
	"github.com/ferrynet/ferry/test/lab"
)

// apiServerAddr is where each node's namespace serves the Kubernetes API of the test, on its
// own loopback: the lab's traffic stays inside its namespaces.
const apiServerAddr = "127.0.0.1:6443"

// changeTimeout bounds the wait for a node change to reach a node's maps. ferryd applies a
// change within a second; the rest is room for a busy machine, and the test logs the time.
const changeTimeout = 5 * time.Second

// TestFerrydKubernetesSource runs ferryd on two nodes with the Kubernetes node source: the
// real ferryd binary reads a kubeconfig and watches Node objects over HTTP, served by a
// stand-in for kube-apiserver inside each node's namespace. Pods of the two nodes reach each
// other through the ranges of the Node objects, and a node that is added, re-addressed and
// deleted in the API changes the node routes map and the kernel routes of the other nodes.
func TestFerrydKubernetesSource(t *testing.T) {
	lab.SkipUnlessPrivileged(t)
	lab.SkipWithoutPlugins(t, []string{"/usr/lib/cni"}, "host-local", "loopback")
	l := lab.NewTest(t, lab.Options{Nodes: lab.CheckNodes()[:2],
		CNIBinDirs: []string{binDir, "/usr/lib/cni"}})
	w0, w1 := l.Node("worker-0"), l.Node("worker-1")
	ctx := context.Background()

	api := nodesourcetest.NewAPIServer()
	t.Cleanup(func() { api.Close() })
	for _, n := range l.Nodes {
		api.Put(nodesourcetest.Node(n.Name, n.IP, n.PodCIDR))
		listener, err := n.Listen(apiServerAddr)
		if err != nil {
			t.Fatal(err)
		}
		api.Serve(listener)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := nodesourcetest.WriteKubeconfig(kubeconfig, apiServerAddr); err != nil {
		t.Fatal(err)
	}
	opts := lab.FerryOptions{BinDir: binDir, Kubeconfig: kubeconfig}
	if err := l.SetupFerry(ctx, opts); err != nil {
		t.Fatalf("set up ferry with the Kubernetes node source: %v", err)
	}

	// Each node's own pod range, from its Node object, is the range of its pods.
	a := addPod(t, w0, "pod-a")
	b := addPod(t, w1, "pod-b")
	for _, p := range []*lab.Pod{a, b} {
		if !p.Node.PodCIDR.Contains(p.IP) {
			t.Errorf("pod %s got %s, outside its node's podCIDR %s", p.Name, p.IP,
				p.Node.PodCIDR)
		}
	}
	ping(t, a, b.IP, 3)
	ping(t, b, a.IP, 3)

	// A node that joins, moves to another address and leaves.
	name := "worker-9"
	podCIDR := netip.MustParsePrefix("10.200.9.0/24")
	steps := []struct {
		change string
		ip     netip.Addr // invalid: the node is deleted
	}{
		{"added", netip.MustParseAddr("10.0.1.99")},
		{"re-addressed", netip.MustParseAddr("10.0.1.98")},
		{"deleted", netip.Addr{}},
	}
	for _, step := range steps {
		start := time.Now()
		if step.ip.IsValid() {
			api.Put(nodesourcetest.Node(name, step.ip, podCIDR))
		} else {
			api.Delete(name)
		}
		for _, n := range []*lab.Node{w0, w1} {
			waitNodeRoute(t, n, podCIDR, step.ip, name+" "+step.change)
			t.Logf("%s %s: node routes map of %s changed after %s", name, step.change, n.Name,
				time.Since(start).Round(time.Millisecond))
			route, err := n.Run(ctx, "ip", "-4", "route", "show", podCIDR.String())
			if err != nil {
				t.Fatalf("list routes of %s: %v", n.Name, err)
			}
			got := strings.TrimSpace(route)
			if step.ip.IsValid() && !strings.Contains(got, "via "+step.ip.String()) ||
				!step.ip.IsValid() && got != "" {
				t.Errorf("%s %s: kernel route to %s on %s is %q, want one via %v", name,
					step.change, podCIDR, n.Name, got, step.ip)
			}
		}
	}
	ping(t, a, b.IP, 2)
	reqs := api.Requests()
	t.Logf("API server requests: %v", reqs)
	if reqs["watch"] < 2 {
		t.Errorf("API server answered %v: want a watch from each ferryd", reqs)
	}
}

// waitNodeRoute waits until n's node routes map sends podCIDR to nodeIP, or holds no entry
// for podCIDR when nodeIP is invalid. change names the change that the map must show.
func waitNodeRoute(t *testing.T, n *lab.Node, podCIDR netip.Prefix, nodeIP netip.Addr,
	change string) {
	t.Helper()
	deadline := time.Now().Add(changeTimeout)
	for {
		got, found := nodeRoutes(t, n)[podCIDR]
		if nodeIP.IsValid() && got == nodeIP || !nodeIP.IsValid() && !found {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s after it, the node routes map of %s has %s -> %v (present: "+
				"%v), want %v", change, changeTimeout, n.Name, podCIDR, got, found, nodeIP)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// serviceAccountDir is where client-go's in-cluster configuration reads a pod's token and
// CA, under the /var/run/secrets that kubelet mounts into pods.
const serviceAccountDir = "/run/secrets/kubernetes.io/serviceaccount"

// TestFerrydInClusterCredentials runs ferryd with "kubernetes: {}", as in a DaemonSet pod: it
// finds the API server through KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT, trusts
// the CA and sends the token of the service account files. ferryd runs in a mount namespace
// of its own with a tmpfs on /run/secrets that holds those files, and the API server in
// worker-0's namespace serves HTTPS with a certificate for 127.0.0.1.
func TestFerrydInClusterCredentials(t *testing.T) {
	lab.SkipUnlessPrivileged(t)
	lab.SkipWithoutPlugins(t, []string{"/usr/lib/cni"}, "host-local", "loopback")
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare (util-linux) for a private /run/secrets")
	}
	l := lab.NewTest(t, lab.Options{Nodes: lab.CheckNodes()[:2],
		CNIBinDirs: []string{binDir, "/usr/lib/cni"}})
	w0, w1 := l.Node("worker-0"), l.Node("worker-1")

	caPEM, cert := selfSignedCert(t, netip.MustParseAddr("127.0.0.1"))
	api := nodesourcetest.NewAPIServer()
	t.Cleanup(func() { api.Close() })
	for _, n := range l.Nodes {
		api.Put(nodesourcetest.Node(n.Name, n.IP, n.PodCIDR))
	}
	listener, err := w0.Listen(apiServerAddr)
	if err != nil {
		t.Fatal(err)
	}
	api.Serve(tls.NewListener(listener, &tls.Config{Certificates: []tls.Certificate{cert}}))

	// The files that kubelet would mount into ferryd's pod.
	token := "ferryd-test-token"
	secrets := t.TempDir()
	for name, data := range map[string][]byte{"token": []byte(token), "ca.crt": caPEM} {
		if err := os.WriteFile(filepath.Join(secrets, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The mount point must exist; a /run/secrets made here goes again at the end.
	if _, err := os.Stat("/run/secrets"); errors.Is(err, os.ErrNotExist) {
		if err := os.Mkdir("/run/secrets", 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove("/run/secrets") })
	}

	if err := w0.WriteFerrydConfig(lab.FerryOptions{BinDir: binDir, InCluster: true}); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(apiServerAddr)
	script := `set -e
mount -t tmpfs ferry-test-secrets /run/secrets
mkdir -p ` + serviceAccountDir + `
cp "$1/token" "$1/ca.crt" ` + serviceAccountDir + `/
export KUBERNETES_SERVICE_HOST="$2" KUBERNETES_SERVICE_PORT="$3"
exec "$4" --config "$5"`
	p, err := w0.Start(context.Background(), "unshare", "--mount", "sh", "-c", script, "sh",
		secrets, host, port, filepath.Join(binDir, "ferryd"), w0.FerrydConfigPath())
	if err != nil {
		t.Fatalf("start ferryd: %v", err)
	}
	waitReady(t, w0, p)

	if got := nodeRoutes(t, w0)[w1.PodCIDR]; got != w1.IP {
		t.Errorf("node routes map of %s sends %s to %v, want %s from worker-1's Node object",
			w0.Name, w1.PodCIDR, got, w1.IP)
	}
	podCIDR := netip.MustParsePrefix("10.200.9.0/24")
	api.Put(nodesourcetest.Node("worker-9", netip.MustParseAddr("10.0.1.99"), podCIDR))
	waitNodeRoute(t, w0, podCIDR, netip.MustParseAddr("10.0.1.99"), "worker-9 added")
	if n := api.RequestsWith("Bearer " + token); n < 1 {
		t.Errorf("no request to the API server carried the service account's token")
	}
}

// selfSignedCert returns a certificate for ip that is its own CA, in PEM, and as a
// tls.Certificate with its key.
func selfSignedCert(t *testing.T, ip netip.Addr) ([]byte, tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ferry test API server"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{ip.AsSlice()},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// unreachableTimeout bounds the wait for ferryd's warning about an API server that refuses
// connections. ferryd probes it every 5 seconds while the first node list is pending.
const unreachableTimeout = 20 * time.Second

// TestFerrydReportsUnreachableAPIServer points ferryd at an address where no API server
// listens. client-go's informer retries a refused watch without reporting it; ferryd must
// warn at its default level while it waits, and not become ready.
func TestFerrydReportsUnreachableAPIServer(t *testing.T) {
	lab.SkipUnlessPrivileged(t)
	l := lab.NewTest(t, lab.Options{Nodes: lab.CheckNodes()[:1]})
	w0 := l.Node("worker-0")

	// No listener exists on port 6444 of the node's namespace.
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := nodesourcetest.WriteKubeconfig(kubeconfig, "127.0.0.1:6444"); err != nil {
		t.Fatal(err)
	}
	if err := w0.WriteFerrydConfig(lab.FerryOptions{BinDir: binDir,
		Kubeconfig: kubeconfig}); err != nil {
		t.Fatal(err)
	}
	p, err := w0.Start(context.Background(), filepath.Join(binDir, "ferryd"), "--config",
		w0.FerrydConfigPath())
	if err != nil {
		t.Fatalf("start ferryd: %v", err)
	}

	start := time.Now()
	for !strings.Contains(p.Output(), "listing or watching nodes failed") {
		if time.Since(start) > unreachableTimeout {
			t.Fatalf("no warning about the API server %s after the start:\n%s",
				unreachableTimeout, p.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("warning after %s", time.Since(start).Round(time.Millisecond))

	out := p.Output()
	if !strings.Contains(out, `level=WARN msg="listing or watching nodes failed`) {
		t.Errorf("the warning is not at level WARN:\n%s", out)
	}
	if !strings.Contains(out, "127.0.0.1:6444") {
		t.Errorf("the warning does not name the API server address:\n%s", out)
	}
	if _, err := os.Stat(w0.FerryConflistPath()); err == nil {
		t.Errorf("ferryd wrote its CNI config without a node list")
	}
}
