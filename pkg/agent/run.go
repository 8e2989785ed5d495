package agent

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/ferrynet/ferry/pkg/config"
	"github.com/ferrynet/ferry/pkg/datapath"
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
}

// Run starts the agent with cfg and serves it until ctx is done: it reloads
// the configuration file on every value from opts.Reload and expires idle
// NAT flows periodically. It runs on the calling goroutine, which must stay
// in the node's network namespace, and returns nil when ctx ends. The
// dataplane then stays attached and keeps forwarding.
func Run(ctx context.Context, cfg *config.Config, opts Options) error {
	log := opts.Logger
	a, err := Start(cfg, log)
	if err != nil {
		return err
	}
	defer a.Close()
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
		return
	}
	if err := a.Reload(cfg); err != nil {
		a.log.Error("reload failed", "path", path, "error", err)
	}
}

// ExpireNAT deletes the NAT flows that have been idle for longer than
// their timeout, logging the count at debug level.
func (a *Agent) ExpireNAT() {
	n, err := a.dp.ExpireNAT(datapath.DefaultNATTimeouts)
	if err != nil {
		a.log.Error("expire NAT flows failed", "expired", n, "error", err)
		return
	}
	a.log.Debug("expired idle NAT flows", "expired", n)
}
