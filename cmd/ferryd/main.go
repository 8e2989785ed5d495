// Command ferryd is ferry's node agent. It loads and attaches the eBPF
// dataplane and fills its maps from the configuration file. It installs
// kernel routes to the pod ranges of nodes on the same subnet, writes the CNI
// configuration once pods can be networked, and expires idle NAT flows.
//
// SIGHUP reloads the configuration file in place. SIGTERM and SIGINT stop
// the agent and leave the dataplane attached and forwarding. ferryd works in
// the network namespace it starts in, which must be the node's. It serves
// Prometheus metrics, /healthz and /readyz on the config's metricsAddress.
//
// Exit status: 0 after a stop by signal or a successful --remove or
// --version, 1 when setting up the node failed, 2 for an invalid command
// line or configuration, in which case nothing on the node has changed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/ferrynet/ferry/pkg/agent"
	"github.com/ferrynet/ferry/pkg/config"
	"github.com/ferrynet/ferry/pkg/logging"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

const defaultConfigPath = "/etc/ferry/ferryd.yaml"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("ferryd", flag.ContinueOnError)
	flags.SetOutput(stderr)
	configPath := flags.String("config", defaultConfigPath, "path of the YAML configuration `file`")
	remove := flags.Bool("remove", false, "detach the dataplane, delete its pins under the "+
		"config's bpffsDir, ferry's kernel routes and the CNI configuration, then exit; "+
		"stop ferryd first")
	showVersion := flags.Bool("version", false, "print the version and exit")
	logLevel := flags.String("log-level", "info", "minimum `level` of log messages: "+
		"debug, info, warn or error")
	flags.Usage = func() {
		fmt.Fprintf(stderr, "Usage: ferryd [--config FILE] [--remove] [--log-level LEVEL]\n"+
			"       ferryd --version\n\nOptions:\n")
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if flags.NArg() > 0 {
		fmt.Fprintf(stderr, "ferryd: unexpected argument %q: ferryd takes only options\n",
			flags.Arg(0))
		return exitUsage
	}
	if *showVersion {
		fmt.Fprintf(stdout, "ferryd %s\n", buildVersion())
		return exitOK
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "ferryd: invalid log level %q: use debug, info, warn or error\n",
			*logLevel)
		return exitUsage
	}
	log := newLogger(stderr, level)

	// Signals are caught from the start: SIGHUP's default action would kill
	// the agent before its first reload.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	reload := make(chan os.Signal, 1)
	signal.Notify(reload, syscall.SIGHUP)
	defer signal.Stop(reload)

	cfg, err := config.Load(*configPath)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(stderr, "ferryd: %v: pass the configuration file with --config FILE\n", err)
		return exitUsage
	}
	if err != nil {
		fmt.Fprintf(stderr, "ferryd: %v\n", err)
		return exitUsage
	}

	if *remove {
		if err := agent.Remove(cfg, log); err != nil {
			log.Error("remove failed", "error", err)
			return exitFailure
		}
		return exitOK
	}

	log.Info("ferryd starting", "version", buildVersion(), "config", *configPath)
	err = agent.Run(ctx, cfg, agent.Options{
		ConfigPath: *configPath,
		Logger:     log,
		Reload:     reload,
		Version:    buildVersion(),
	})
	var cfgErr *config.Error
	switch {
	case errors.As(err, &cfgErr):
		fmt.Fprintf(stderr, "ferryd: %v\n", err)
		return exitUsage
	case err != nil:
		log.Error("start failed", "node", cfg.NodeName, "error", err)
		return exitFailure
	}
	return exitOK
}

// Limits of repeated log records: at most logBurst records with the same
// message and ids (such as node or ifindex) per logInterval.
const (
	logBurst    = 5
	logInterval = time.Minute
)

// newLogger returns ferryd's logger: text lines on w from level up, with
// repeats limited. The Kubernetes client library logs through it too.
func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	text := slog.NewTextHandler(w, &slog.HandlerOptions{Level: level,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			// client-go's verbosity levels come as DEBUG+1 and up.
			if l, ok := a.Value.Any().(slog.Level); ok && a.Key == slog.LevelKey &&
				l > slog.LevelDebug && l < slog.LevelInfo {
				a.Value = slog.StringValue("DEBUG")
			}
			return a
		}})
	limited := logging.NewRateLimited(text, logBurst, logInterval)
	klog.SetSlogLogger(slog.New(logging.RaiseClientGoWarnings(limited)).With("component",
		"client-go"))
	return slog.New(limited)
}

// buildVersion returns the version set at link time, or else the module
// version and VCS revision that the Go toolchain recorded.
func buildVersion() string {
	if version != "" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := info.Main.Version
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" {
			v += " " + s.Value
		}
	}
	return v
}
