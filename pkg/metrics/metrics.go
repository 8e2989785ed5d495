// Package metrics serves ferryd's Prometheus metrics, /healthz and /readyz.
// The dataplane's counters, map fill levels and hook states are read from
// the pinned maps at every scrape. The agent's own events, such as config
// reloads and node changes, are counted as they happen.
package metrics

import (
	"fmt"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ferrynet/ferry/pkg/datapath"
)

const namespace = "ferry"

// Dataplane is the source of the values that the collector reads at every scrape. The agent
// implements it on the loaded dataplane.
type Dataplane interface {
	CountersByHook() ([]datapath.Counter, error)
	Usage() ([]datapath.MapUsage, error)
	Hooks() ([]datapath.HookState, datapath.PodHooks, error)
}

// Metrics holds ferryd's metrics in a registry of its own.
type Metrics struct {
	registry    *prometheus.Registry
	reloads     *prometheus.CounterVec
	nodeChanges *prometheus.CounterVec
	nodes       *prometheus.GaugeVec

	mu sync.Mutex
	dp Dataplane
}

// Results of config reloads, the values of the label "result".
const (
	ReloadSuccess = "success"
	ReloadFailure = "failure"
)

// New returns the metrics of a ferryd of version, with Go runtime and
// process metrics.
func New(version string) *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "config_reloads_total",
			Help:      "Config reloads by result: success, or failure when the file was invalid or applying it failed.",
		}, []string{"result"}),
		nodeChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "node_changes_total",
			Help:      "Remote nodes added, changed (new address or pod range) and removed since start.",
		}, []string{"change"}),
		nodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace,
			Name:      "nodes",
			Help:      "Nodes of the node source: routed, or skipped because they lack an address or a valid pod range.",
		}, []string{"state"}),
	}
	for _, r := range []string{ReloadSuccess, ReloadFailure} {
		m.reloads.WithLabelValues(r)
	}
	for _, c := range []string{"added", "changed", "removed"} {
		m.nodeChanges.WithLabelValues(c)
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace,
		Name:      "build_info",
		Help:      "The running ferryd's version, as a label of a constant 1.",
	}, []string{"version"})
	build.WithLabelValues(version).Set(1)

	m.registry.MustRegister(m.reloads, m.nodeChanges, m.nodes, build,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&dataplaneCollector{m: m})
	return m
}

// Registry returns the registry that the handler serves.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// SetDataplane sets the dataplane that scrapes read, or none with nil.
func (m *Metrics) SetDataplane(dp Dataplane) {
	m.mu.Lock()
	m.dp = dp
	m.mu.Unlock()
}

func (m *Metrics) dataplane() Dataplane {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.dp
}

// ReloadDone counts a config reload that ended with err.
func (m *Metrics) ReloadDone(err error) {
	result := ReloadSuccess
	if err != nil {
		result = ReloadFailure
	}
	m.reloads.WithLabelValues(result).Inc()
}

// NodesChanged counts changes of remote nodes.
func (m *Metrics) NodesChanged(added, changed, removed int) {
	m.nodeChanges.WithLabelValues("added").Add(float64(added))
	m.nodeChanges.WithLabelValues("changed").Add(float64(changed))
	m.nodeChanges.WithLabelValues("removed").Add(float64(removed))
}

// SetNodes records how many nodes of the source are routed and skipped.
func (m *Metrics) SetNodes(routed, skipped int) {
	m.nodes.WithLabelValues("routed").Set(float64(routed))
	m.nodes.WithLabelValues("skipped").Set(float64(skipped))
}

// Handler serves /metrics, /healthz and /readyz. /healthz returns 200 while
// the process serves. /readyz returns 200 when ready returns nil and 503
// with the error otherwise.
func (m *Metrics) Handler(ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{
		// A map that cannot be read fails its own metrics, not the scrape.
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}
