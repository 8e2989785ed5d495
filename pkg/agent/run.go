package agent

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/ferrynet/ferry/pkg/config"
	"github.com/ferrynet/ferry/pkg/metrics"
	"github.com/ferrynet/ferry/pkg/nodesource"
)

// DefaultNATInterval is how often Run expires idle NAT flows.
const DefaultNATInterval = 10 * time.Second

// Options configure Run.
type Options struct {
	// ConfigPath is the configuration file that Run reads again on reload.
	ConfigPath string
	Logger     *slog.Logger
	// Reload receives a value for every reload request, such as SIGHUP.
	Reload <-chan os.Signal
	// NATInterval is the period of NAT expiry; zero means DefaultNATInterval.
	NATInterval time.Duration
	// Ready, when set, is called once the node is ready, after Start.
	Ready func(*Agent)
	// NodeSource, when set, replaces the node source that the config
	// selects. Tests pass a Kubernetes source on a fake clientset.
	NodeSource nodesource.Source
	// Version is the ferryd version that the metrics report.
	Version string
}

// Run starts the agent with cfg and serves it until ctx is done. First it
// serves metrics, /healthz and /readyz on cfg.MetricsAddress and waits until
// the node source lists this node with an address and a pod range. Then it
// starts the agent, applies every change of the node source, reloads the
// configuration file on every value from opts.Reload and expires idle NAT
// flows periodically. It runs on the calling goroutine, which must stay in
// the node's network namespace, and returns nil when ctx ends. The
// dataplane then stays attached and keeps forwarding.
func Run(ctx context.Context, cfg *config.Config, opts Options) error {
	log := opts.Logger
	m := metrics.New(opts.Version)
	// The listener opens here, in the node's network namespace.
	srv, err := startMetricsServer(cfg.MetricsAddress, m, log)
	if err != nil {
		return err
	}
	defer srv.close()

	src := opts.NodeSource
	if src == nil {
		if src, err = NewNodeSource(cfg); err != nil {
			return err
		}
	}
	if cfg.Kubernetes != nil {
		log.Info("listing nodes", "source", src.Name(), "node", cfg.NodeName)
	}
	if k, ok := src.(*nodesource.Kubernetes); ok {
		// client-go logs these only at its debug levels.
		kubeconfig := cmp.Or(cfg.Kubernetes.Kubeconfig, "in-cluster credentials")
		k.SetErrorHandler(func(err error) {
			log.Warn("listing or watching nodes failed, retrying: check that this node "+
				"reaches the API server of the kubeconfig and may list nodes",
				"kubeconfig", kubeconfig, "error", err)
		})
	}
	if err := src.Start(ctx); err != nil {
		if ctx.Err() != nil {
			log.Info("stopped before the node list was complete")
			return nil
		}
		return fmt.Errorf("start %s node source: %w", src.Name(), err)
	}
	eff := waitForSelf(ctx, cfg, src, log)
	if eff == nil {
		log.Info("stopped while waiting for this node in the node source", "node", cfg.NodeName)
		return nil
	}

	a, err := start(cfg, eff, src, log, m)
	if err != nil {
		return err
	}
	m.SetDataplane(a)
	srv.setAgent(a)
	defer func() {
		// No scrape may read the maps once they are closed.
		srv.close()
		m.SetDataplane(nil)
		a.Close()
	}()
	if opts.Ready != nil {
		opts.Ready(a)
	}

	interval := opts.NATInterval
	if interval == 0 {
		interval = DefaultNATInterval
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()

	for {
		select {
		case <-ctx.Done():
			log.Info("stopping: the dataplane stays attached and keeps forwarding",
				"bpffs_dir", cfg.BPFFSDir)
			return nil
		case <-opts.Reload:
			a.reloadFile(opts.ConfigPath)
		case <-src.Changed():
			if err := a.SyncNodes(); err != nil {
				a.log.Error("apply node changes failed", "source", src.Name(), "error", err)
			}
		case <-ticker.C:
			a.ExpireNAT()
		}
	}
}

// reloadFile reads the configuration file and applies it. It logs every
// error; an invalid file leaves the running state as it was.
func (a *Agent) reloadFile(path string) {
	a.log.Info("reloading config", "path", path)
	cfg, err := config.Load(path)
	if err != nil {
		a.log.Error("reload rejected: keeping the running config", "path", path, "error", err)
		if a.metrics != nil {
			a.metrics.ReloadDone(err)
		}
		return
	}
	if err := a.Reload(cfg); err != nil {
		a.log.Error("reload failed", "path", path, "error", err)
	}
}

// ExpireNAT deletes the NAT flows that have been idle for longer than the
// timeout of their state in masquerade.timeouts, logging the count at debug
// level.
func (a *Agent) ExpireNAT() {
	n, err := a.dp.ExpireNAT(a.cfg.Masquerade.Timeouts)
	if err != nil {
		a.log.Error("expire NAT flows failed", "expired", n, "error", err)
		return
	}
	a.log.Debug("expired idle NAT flows", "expired", n)
}
