package agent

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/ferrynet/ferry/pkg/config"
	"github.com/ferrynet/ferry/pkg/datapath"
)

// Remove undoes what the agent set up for cfg on this node: it deletes the
// CNI configuration first, so that the runtime networks no new pods, then
// ferry's kernel routes, then the uplink attachments and every object pinned
// under cfg.BPFFSDir. Pods lose their networking. The host-local allocations
// under cfg.CNI.IPAMDataDir stay. Run it only while ferryd is stopped.
func Remove(cfg *config.Config, log *slog.Logger) error {
	var errs []error
	if err := removeConflist(cfg); err != nil {
		errs = append(errs, err)
	}
	if err := removeKernelRoutes(); err != nil {
		errs = append(errs, fmt.Errorf("remove kernel routes: %w", err))
	}
	if err := datapath.Remove(cfg.BPFFSDir); err != nil {
		errs = append(errs, fmt.Errorf("remove dataplane under %s: %w", cfg.BPFFSDir, err))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	log.Info("removed dataplane, kernel routes and CNI configuration", "node", cfg.NodeName,
		"bpffs_dir", cfg.BPFFSDir)
	return nil
}
