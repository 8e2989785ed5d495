package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ferrynet/ferry/pkg/agent/agenttest"
	"github.com/ferrynet/ferry/pkg/config"
)

// runningAgent is Run in the background on a simulated node.
type runningAgent struct {
	ready  chan *Agent
	done   chan error
	reload chan os.Signal
	logs   *logBuffer
	cancel context.CancelFunc
}

// runAgent starts Run on node with cfg and opts, and stops it when the test
// ends. It does not wait for the agent to be ready.
func runAgent(t *testing.T, node *agenttest.Node, cfg *config.Config,
	opts Options) *runningAgent {
	t.Helper()
	log, logs := newLogger(t)
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningAgent{ready: make(chan *Agent, 1), done: make(chan error, 1),
		reload: make(chan os.Signal, 1), logs: logs, cancel: cancel}
	opts.Logger = log
	opts.Reload = r.reload
	opts.Ready = func(a *Agent) { r.ready <- a }
	go func() {
		r.done <- node.DoErr(func() error { return Run(ctx, cfg, opts) })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run returned %v after cancel, want nil", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
	return r
}

// waitReady waits until the agent is ready and returns it.
func (r *runningAgent) waitReady(t *testing.T) *Agent {
	t.Helper()
	select {
	case a := <-r.ready:
		return a
	case err := <-r.done:
		t.Fatalf("Run returned before ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("timed out waiting for the agent to become ready")
	}
	return nil
}

// stop ends Run, as a SIGTERM does, and waits for it to return nil.
func (r *runningAgent) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run returned %v after cancel, want nil", err)
		}
		r.done <- nil // for the cleanup that runAgent registered
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// httpGet requests path from the agent's metrics listener on the default
// metricsAddress inside node, and returns the status code and body. The
// connection is opened on the thread that is in the node's namespace.
func httpGet(t *testing.T, node *agenttest.Node, path string) (int, string) {
	t.Helper()
	var (
		status int
		body   []byte
	)
	err := node.DoErr(func() error {
		conn, err := net.DialTimeout("tcp", config.DefaultMetricsAddress, 5*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		req, err := http.NewRequest(http.MethodGet, "http://"+config.DefaultMetricsAddress+path,
			nil)
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
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return status, string(body)
}

// metricLine returns the line of a metric with labels in a Prometheus text
// exposition, such as `ferry_hook_attached{hook="uplink_ingress",mode="tcx"}`.
func metricValue(t *testing.T, body, series string) string {
	t.Helper()
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	t.Errorf("no series %s in the metrics", series)
	return ""
}

// kubernetesConfig is a ferryd configuration for node with the Kubernetes
// node source in place of a node list.
func kubernetesConfig(node *agenttest.Node) string {
	return fmt.Sprintf("nodeName: worker-0\nclusterCIDR: 10.200.0.0/16\nbpffsDir: %s\n"+
		"cni:\n  confDir: %s\n  binDir: %s\n  ipamDataDir: %s\nkubernetes: {}\n",
		node.BPFFSDir, node.ConfDir, node.BinDir, node.IPAMDataDir)
}
