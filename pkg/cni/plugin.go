package cni

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/ferrynet/ferry/pkg/datapath"
)

// SupportedVersions lists the CNI specification versions that the plugin accepts. Results
// are converted to the version of the configuration.
var SupportedVersions = version.PluginSupports("0.3.1", "0.4.0", "1.0.0", "1.1.0")

// Plugin runs the CNI commands. Its methods have the signatures of skel.CNIFuncs and work in
// the calling thread's network namespace, which the runtime makes the node's.
type Plugin struct {
	// Stdout receives the result of ADD; nil means os.Stdout.
	Stdout io.Writer
	// Log receives diagnostics that do not fail the command; nil discards them.
	Log *slog.Logger
}

func (p *Plugin) stdout() io.Writer {
	if p.Stdout == nil {
		return os.Stdout
	}
	return p.Stdout
}

func (p *Plugin) log() *slog.Logger {
	if p.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Log
}

// openDataplane opens the maps that ferryd pinned under dir and reads the node settings. It
// returns an error with CNI code 11 (try again later) when ferryd has not loaded the
// dataplane or not written the settings yet.
func openDataplane(dir string) (*datapath.EndpointMaps, datapath.NodeSettings, error) {
	maps, err := datapath.OpenEndpointMaps(dir)
	if err != nil {
		return nil, datapath.NodeSettings{}, dataplaneError(dir, err)
	}
	settings, err := maps.Settings()
	if err != nil {
		maps.Close()
		return nil, datapath.NodeSettings{}, dataplaneError(dir, err)
	}
	return maps, settings, nil
}

func dataplaneError(dir string, err error) error {
	if errors.Is(err, datapath.ErrNotLoaded) {
		return withCode(types.ErrTryAgainLater,
			fmt.Errorf("%w under %s: start ferryd on this node", datapath.ErrNotLoaded, dir))
	}
	return withCode(ErrCodeDatapath, fmt.Errorf("open dataplane under %s: %w", dir, err))
}
