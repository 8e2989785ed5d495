package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"

	"github.com/ferrynet/ferry/pkg/config"
	"github.com/ferrynet/ferry/pkg/nodesource"
)

// Reload applies a new validated config in place: node routes, masquerade
// exclusions, kernel routes and masquerade settings, each new entry before
// the removal of a stale one. The programs stay loaded and attached, so
// traffic flows on. A config that changes a setting that needs a restart is
// rejected with a *config.Error before anything changes.
//
// When a step fails, Reload carries on with the other steps and returns the
// errors. The node then has part of the new state, and the next Reload
// completes it because every step syncs to the full config.
func (a *Agent) Reload(cfg *config.Config) error {
	err := a.reload(cfg)
	if a.metrics != nil {
		a.metrics.ReloadDone(err)
	}
	return err
}

func (a *Agent) reload(cfg *config.Config) error {
	// With the static source, the file's node list is the new one as it is;
	// the Kubernetes source keeps its nodes.
	next := cfg
	if cfg.Kubernetes != nil {
		next = a.withSourceNodes(cfg)
	}
	if err := restartOnlyChanges(a.cfg, next); err != nil {
		return err
	}
	if static, ok := a.source.(*nodesource.Static); ok {
		static.Set(sourceNodes(cfg.Nodes))
	}
	a.base = cfg
	if err := a.apply(next); err != nil {
		return fmt.Errorf("apply reloaded config: %w", err)
	}
	a.log.Info("reloaded config", "remote_nodes", len(next.RemoteNodes()),
		"masquerade_exclusions", len(masqueradeExclusions(next)))
	return nil
}

// apply makes the node match next, a config in effect with its node list:
// node routes, masquerade exclusions, kernel routes, masquerade settings and
// the CNI configuration, each new entry before the removal of a stale one.
// When a step fails, apply carries on with the others and returns the
// errors. The next apply completes the state, because every step syncs to
// the full config.
func (a *Agent) apply(next *config.Config) error {
	a.logNodeChanges(a.cfg, next)
	var errs []error
	if err := a.syncMaps(next); err != nil {
		errs = append(errs, err)
	}
	if settingsChanged(a.cfg, next) {
		if err := a.writeSettings(next, a.mode, a.podMode); err != nil {
			errs = append(errs, err)
		} else {
			a.log.Info("masquerade settings changed", "masquerade", next.Masquerade.Enabled,
				"port_min", next.Masquerade.PortMin, "port_max", next.Masquerade.PortMax)
		}
	}
	if err := a.syncRoutes(next); err != nil {
		errs = append(errs, err)
	}
	// The device's MTU may have changed since the last write.
	if err := a.writeCNIConfig(next); err != nil {
		errs = append(errs, err)
	}
	a.cfg = next
	a.updateNodeMetrics()
	return errors.Join(errs...)
}

func settingsChanged(prev, next *config.Config) bool {
	o, n := prev.Masquerade, next.Masquerade
	return o.Enabled != n.Enabled || o.PortMin != n.PortMin || o.PortMax != n.PortMax
}

// restartOnlyChanges returns a *config.Error that lists the settings that
// differ between prev and next and take effect only at start.
func restartOnlyChanges(prev, next *config.Config) error {
	const fix = "restart ferryd to apply it, or restore the old value"
	var ps []config.Problem
	check := func(field string, before, after any) {
		if !reflect.DeepEqual(before, after) {
			ps = append(ps, config.Problem{Field: field, Message: fmt.Sprintf(
				"changed from %v to %v: %s", show(before), show(after), fix)})
		}
	}
	check("nodeName", prev.NodeName, next.NodeName)
	check("device", prev.Device, next.Device)
	check("nodeIP", prev.NodeIP, next.NodeIP)
	check("attachMode", prev.AttachMode, next.AttachMode)
	check("podAttachMode", prev.PodAttachMode, next.PodAttachMode)
	check("masquerade.natTableSize", prev.Masquerade.NATTableSize, next.Masquerade.NATTableSize)
	check("bpffsDir", prev.BPFFSDir, next.BPFFSDir)
	check("cni", prev.CNI, next.CNI)
	check("metricsAddress", prev.MetricsAddress, next.MetricsAddress)
	check("kubernetes", prev.Kubernetes, next.Kubernetes)
	if prev.NodeName == next.NodeName {
		// A new address or pod range of this node would strand its pods.
		i := slices.IndexFunc(next.Nodes, func(n config.Node) bool { return n.Name == next.NodeName })
		field := fmt.Sprintf("nodes[%d]", i)
		check(field+".ip", prev.Self().IP, next.Self().IP)
		check(field+".podCIDR", prev.Self().PodCIDR, next.Self().PodCIDR)
	}
	if len(ps) > 0 {
		return &config.Error{Problems: ps}
	}
	return nil
}

// show formats a setting's value for a message, with quotes around strings
// so that an empty one is visible.
func show(v any) string {
	switch v := v.(type) {
	case netip.Addr:
		if !v.IsValid() {
			return "unset"
		}
		return v.String()
	case string:
		return fmt.Sprintf("%q", v)
	case fmt.Stringer:
		return fmt.Sprintf("%q", v.String())
	default:
		return fmt.Sprintf("%+v", v)
	}
}
