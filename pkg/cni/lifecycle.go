package cni

import (
	"context"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/ferrynet/ferry/pkg/datapath"
)

// Status implements CNI STATUS (CNI 1.1): the plugin is available when ferryd has loaded the
// dataplane under bpffsDir and the IPAM plugin reports itself available. An IPAM plugin that
// predates STATUS counts as available.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	conf, err := ParseNetConf(args.StdinData)
	if err != nil {
		return toCNIError(err)
	}
	maps, _, err := openDataplane(conf.BPFFSDir)
	if err != nil {
		if errors.Is(err, datapath.ErrNotLoaded) {
			err = withCode(types.ErrPluginNotAvailable, err)
		}
		return toCNIError(err)
	}
	maps.Close()

	err = ipamStatus(context.Background(), conf, args.StdinData)
	if errors.Is(err, errIPAMTooOld) {
		p.log().Debug("IPAM plugin predates STATUS", "ipam", conf.IPAM.Type, "error", err)
		return nil
	}
	return toCNIError(err)
}

// GC implements CNI GC (CNI 1.1). It deletes the veth pairs, endpoint entries and pod program
// links of pods that the runtime no longer lists in cni.dev/valid-attachments, and endpoint
// entries whose interface is gone, then has the IPAM plugin release their addresses. Only
// veths with an entry in this dataplane's endpoints map are candidates, so the veths of
// another network stay.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	conf, err := ParseNetConf(args.StdinData)
	if err != nil {
		return toCNIError(err)
	}

	var errs []error
	maps, err := datapath.OpenMaps(conf.BPFFSDir)
	switch {
	case errors.Is(err, datapath.ErrNotLoaded):
		p.log().Info("dataplane not loaded: no endpoint to collect", "bpffs_dir",
			conf.BPFFSDir)
	case err != nil:
		errs = append(errs, dataplaneError(conf.BPFFSDir, err))
	default:
		if err := p.collectEndpoints(maps, conf); err != nil {
			errs = append(errs, withCode(ErrCodeDatapath, err))
		}
		maps.Close()
	}

	err = ipamGC(context.Background(), conf, args.StdinData)
	if errors.Is(err, errIPAMTooOld) {
		p.log().Debug("IPAM plugin predates GC", "ipam", conf.IPAM.Type, "error", err)
	} else if err != nil {
		errs = append(errs, err)
	}
	return toCNIError(errors.Join(errs...))
}

// collectEndpoints removes the endpoints and veths that GC collects. The CNI specification
// (1.1) has the runtime run GC only while no ADD or DEL is in progress, so a veth whose
// attachment is not valid is stale and not one that an ADD is still setting up.
func (p *Plugin) collectEndpoints(maps *datapath.Maps, conf *NetConf) error {
	valid := make(map[string]bool, len(conf.ValidAttachments))
	for _, a := range conf.ValidAttachments {
		valid[HostVethName(a.ContainerID, a.IfName)] = true
	}

	eps, err := maps.Endpoints()
	if err != nil {
		return err
	}
	var errs []error
	stale := map[int]netlink.Link{}
	for _, ep := range eps {
		link, err := netlink.LinkByIndex(ep.IfIndex)
		var notFound netlink.LinkNotFoundError
		switch {
		case errors.As(err, &notFound):
			p.log().Info("delete endpoint of a deleted interface", "ip", ep.IP,
				"ifindex", ep.IfIndex)
			if err := maps.DeleteEndpoint(ep.IP); err != nil {
				errs = append(errs, err)
			}
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("find interface %d of endpoint %s: %w",
				ep.IfIndex, ep.IP, err))
			continue
		}
		name := link.Attrs().Name
		if link.Type() != "veth" || !isHostVethName(name) || valid[name] {
			continue
		}
		p.log().Info("delete endpoint of a stale attachment", "ip", ep.IP, "interface", name)
		if err := maps.DeleteEndpoint(ep.IP); err != nil {
			errs = append(errs, err)
		}
		stale[ep.IfIndex] = link
	}

	for _, link := range stale {
		name := link.Attrs().Name
		if err := datapath.DetachPod(conf.BPFFSDir, name); err != nil {
			errs = append(errs, fmt.Errorf("detach pod program from %s: %w", name, err))
		}
		if err := deleteHostVeth(link); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
