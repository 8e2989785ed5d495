package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/ferrynet/ferry/pkg/datapath"
	"github.com/ferrynet/ferry/pkg/metrics"
)

// shutdownTimeout bounds the wait for scrapes in progress when ferryd stops.
const shutdownTimeout = 2 * time.Second

// metricsServer serves the metrics, /healthz and /readyz.
type metricsServer struct {
	srv   *http.Server
	done  chan struct{}
	once  sync.Once
	agent atomic.Pointer[Agent]
}

// startMetricsServer listens on addr in the calling thread's network
// namespace and serves in the background.
func startMetricsServer(addr string, m *metrics.Metrics, log *slog.Logger) (*metricsServer,
	error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on metricsAddress %s: %w: set metricsAddress to a free "+
			"address and port", addr, err)
	}
	s := &metricsServer{done: make(chan struct{})}
	s.srv = &http.Server{Handler: m.Handler(s.ready), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server failed", "address", addr, "error", err)
		}
	}()
	log.Info("serving metrics, /healthz and /readyz", "address", ln.Addr().String())
	return s, nil
}

func (s *metricsServer) setAgent(a *Agent) { s.agent.Store(a) }

func (s *metricsServer) ready() error {
	a := s.agent.Load()
	if a == nil {
		return errors.New("starting: the dataplane is not set up yet")
	}
	return a.Ready()
}

// close stops serving, waiting for requests in progress for a moment.
func (s *metricsServer) close() {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		_ = s.srv.Shutdown(ctx)
		<-s.done
	})
}

// Ready returns nil when the agent has set the node up, with its maps
// filled, and ferry's programs are on both uplink hooks. Otherwise it
// returns what is missing.
func (a *Agent) Ready() error {
	if !a.ready.Load() {
		return errors.New("starting: the dataplane is not set up yet")
	}
	hooks, _, err := a.Hooks()
	if err != nil {
		return fmt.Errorf("read hook state: %w", err)
	}
	for _, h := range hooks {
		if !h.Attached {
			return fmt.Errorf("ferry's program is not attached to %s of ifindex %d", h.Hook,
				h.IfIndex)
		}
	}
	return nil
}

// CountersByHook returns the dataplane's packet counters by hook and reason.
func (a *Agent) CountersByHook() ([]datapath.Counter, error) { return a.dp.CountersByHook() }

// Usage returns the fill level of the dataplane's maps.
func (a *Agent) Usage() ([]datapath.MapUsage, error) { return a.dp.Usage() }

// Hooks returns the attachment state of the uplink and pod programs. It
// may run on any goroutine: it enters the node's network namespace.
func (a *Agent) Hooks() ([]datapath.HookState, datapath.PodHooks, error) {
	var (
		hooks []datapath.HookState
		pods  datapath.PodHooks
	)
	err := a.netns.Do(func(ns.NetNS) error {
		var err error
		hooks, pods, err = a.dp.Hooks(a.dp.Dir)
		return err
	})
	return hooks, pods, err
}
