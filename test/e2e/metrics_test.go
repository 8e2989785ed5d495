package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrynet/ferry/test/lab"
)

// metricsAddr is ferryd's default metricsAddress, on the loopback of each
// node namespace.
const metricsAddr = "127.0.0.1:9402"

// readyTimeout bounds the wait for a started ferryd to report ready.
const readyTimeout = 60 * time.Second

// httpGetIn requests path from ferryd's metrics listener inside ns. The
// connection opens on a thread in the namespace, so that 127.0.0.1 is the
// namespace's loopback.
func httpGetIn(ns *lab.Namespace, path string) (int, string, error) {
	var (
		status int
		body   []byte
	)
	err := ns.Do(func() error {
		conn, err := net.DialTimeout("tcp", metricsAddr, 2*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		req, err := http.NewRequest(http.MethodGet, "http://"+metricsAddr+path, nil)
		if err != nil {
			return err
		}
		req.Close = true
		if err := req.Write(conn); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		status = resp.StatusCode
		body, err = io.ReadAll(resp.Body)
		return err
	})
	return status, string(body), err
}

// waitReady waits until the ferryd process p on n returns 200 for /readyz.
func waitReady(t *testing.T, n *lab.Node, p *lab.Process) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	last := ""
	for time.Now().Before(deadline) {
		status, body, err := httpGetIn(n.Namespace, "/readyz")
		if err == nil && status == http.StatusOK {
			return
		}
		last = fmt.Sprintf("status %d %q, error %v", status, strings.TrimSpace(body), err)
		select {
		case <-p.Done():
			t.Fatalf("ferryd on %s exited before it was ready: %v\n%s", n.Name, p.Err(),
				p.Output())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("ferryd on %s not ready within %s: last /readyz: %s\n%s", n.Name, readyTimeout,
		last, p.Output())
}

// scrape returns the samples of ferryd's metrics on n, keyed by series.
func scrape(t *testing.T, n *lab.Node) map[string]float64 {
	t.Helper()
	status, body, err := httpGetIn(n.Namespace, "/metrics")
	if err != nil || status != http.StatusOK {
		t.Fatalf("scrape metrics of %s: status %d, error %v\n%s", n.Name, status, err, body)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

func requireSample(t *testing.T, samples map[string]float64, series string) float64 {
	t.Helper()
	v, ok := samples[series]
	if !ok {
		t.Errorf("no series %s in the metrics", series)
	}
	return v
}

// TestFerrydMetrics checks ferryd's metrics, health and readiness on a lab node that
// forwards, masquerades and reloads, that the listener is on loopback only, and that
// ferryctl status shows them.
func TestFerrydMetrics(t *testing.T) {
	l, _ := newFerryLab(t, lab.CheckNodes()[:2], lab.FerryOptions{})
	w0, w1 := l.Node("worker-0"), l.Node("worker-1")
	waitReady(t, w0, w0.Ferryd())
	a := addPod(t, w0, "pod-a")
	b := addPod(t, w1, "pod-b")
	ping(t, a, b.IP, 3)
	ext, err := l.Ext.StartPeerReporter("tcp", netip.AddrPortFrom(lab.InternetIP, 7000))
	if err != nil {
		t.Fatalf("start internet reporter: %v", err)
	}
	defer ext.Close()
	queryTCP(t, a.Namespace, netip.AddrPortFrom(lab.InternetIP, 7000))

	if status, body, err := httpGetIn(w0.Namespace, "/healthz"); err != nil || status != 200 {
		t.Errorf("/healthz = %d %q, %v; want 200", status, body, err)
	}
	if status, body, err := httpGetIn(w0.Namespace, "/readyz"); err != nil || status != 200 {
		t.Errorf("/readyz = %d %q, %v; want 200", status, body, err)
	}

	m := scrape(t, w0)
	if v := requireSample(t, m,
		`ferry_datapath_packets_total{dropped="false",hook="from-pod",reason="forward-remote"}`); v < 3 {
		t.Errorf("forward-remote packets = %v, want at least the 3 echo requests", v)
	}
	if v := requireSample(t, m,
		`ferry_datapath_packets_total{dropped="false",hook="uplink-egress",reason="snat"}`); v == 0 {
		t.Errorf("snat packets = 0 after a TCP connection to the internet host")
	}
	if v := requireSample(t, m, `ferry_nat_entries`); v < 2 {
		t.Errorf("NAT entries = %v, want the two of the TCP flow", v)
	}
	if v := requireSample(t, m, `ferry_nat_capacity_entries`); v != 2*65536 {
		t.Errorf("NAT capacity = %v, want 131072 (natTableSize 65536)", v)
	}
	for _, series := range []string{
		`ferry_hook_attached{hook="uplink_ingress",mode="tcx"}`,
		`ferry_hook_attached{hook="uplink_egress",mode="tcx"}`,
		`ferry_endpoints`, `ferry_pod_hooks{state="attached"}`, `ferry_node_routes`,
		`ferry_nodes{state="routed"}`,
	} {
		want := 1.0
		if series == `ferry_nodes{state="routed"}` {
			want = 2
		}
		if v := requireSample(t, m, series); v != want {
			t.Errorf("%s = %v, want %v", series, v, want)
		}
	}
	if v := requireSample(t, m, `ferry_map_fill_ratio{map="endpoints"}`); v <= 0 || v >= 1 {
		t.Errorf("endpoints fill ratio = %v, want between 0 and 1", v)
	}

	// A reload is counted.
	if err := syscall.Kill(w0.Ferryd().PID, syscall.SIGHUP); err != nil {
		t.Fatalf("send SIGHUP: %v", err)
	}
	if !waitFor(10*time.Second, func() bool {
		return scrape(t, w0)[`ferry_config_reloads_total{result="success"}`] == 1
	}) {
		t.Errorf("the reload was not counted as a success")
	}

	// The default listener is on loopback only.
	err = w1.Do(func() error {
		conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(w0.IP, 9402).String(),
			2*time.Second)
		if err == nil {
			conn.Close()
		}
		return err
	})
	if err == nil {
		t.Errorf("worker-1 connected to worker-0's metrics on %s:9402; want loopback only", w0.IP)
	}

	out, err := w0.Ferryctl(context.Background(), binDir, "status")
	if err != nil {
		t.Fatalf("ferryctl status: %v\n%s", err, out)
	}
	for _, want := range []string{"attached, last of 1 programs",
		"FERRYD", "ready, version", "CONFIG RELOADS", "1 succeeded, 0 failed",
		"2 routed, 0 skipped"} {
		if !strings.Contains(out, want) {
			t.Errorf("ferryctl status does not show %q:\n%s", want, out)
		}
	}
}
