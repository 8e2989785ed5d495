package cni

import (
	"context"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
)

// Status implements CNI STATUS (CNI 1.1): the plugin is available when ferryd has loaded the
// dataplane under bpffsDir and written the node settings, the uplink that the settings name
// exists, and the IPAM plugin reports itself available. An IPAM plugin that predates STATUS
// counts as available. Every other outcome is error 50 (plugin not available), so that the
// runtime holds new pods back.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	conf, err := ParseNetConf(args.StdinData)
	if err != nil {
		return toCNIError(err)
	}
	maps, settings, err := openDataplane(conf.BPFFSDir)
	if err != nil {
		return toCNIError(withCode(types.ErrPluginNotAvailable, err))
	}
	maps.Close()

	if _, err := netlink.LinkByIndex(settings.UplinkIfIndex); err != nil {
		return toCNIError(withCode(types.ErrPluginNotAvailable, fmt.Errorf("find uplink "+
			"interface %d of the dataplane under %s: %w: restart ferryd on this node",
			settings.UplinkIfIndex, conf.BPFFSDir, err)))
	}

	err = ipamStatus(context.Background(), conf, args.StdinData)
	if errors.Is(err, errIPAMTooOld) {
		p.log().Debug("IPAM plugin predates STATUS", "ipam", conf.IPAM.Type, "error", err)
		return nil
	}
	if err != nil {
		return toCNIError(withCode(types.ErrPluginNotAvailable, err))
	}
	return nil
}
