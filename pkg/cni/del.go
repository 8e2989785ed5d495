package cni

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/vishvananda/netlink"

	"github.com/ferrynet/ferry/pkg/datapath"
)

// Del implements CNI DEL. It removes the pod's endpoint entries, detaches the pod program,
// deletes the veth pair and releases the addresses with the IPAM plugin. It succeeds when
// any of these are already gone: the pod namespace, CNI_NETNS, the veth, the whole
// dataplane. It releases the addresses even when an earlier step fails.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	ctx := context.Background()
	conf, err := ParseNetConf(args.StdinData)
	if err != nil {
		return toCNIError(err)
	}
	hostName := HostVethName(args.ContainerID, args.IfName)
	log := p.log().With("container_id", args.ContainerID, "interface", hostName)
	// DEL must release the address whatever CNI_ARGS contains, so a malformed value only
	// costs the pod name in the log.
	if pod, err := ParseArgs(args.Args); err != nil {
		log.Warn("CNI_ARGS ignored", "error", err)
	} else if pod.Name != "" {
		log = log.With("pod", pod.String())
	}

	var errs []error
	host, err := findHostVeth(hostName)
	switch {
	case errors.Is(err, errNotVeth):
		log.Warn("interface left in place", "error", err)
	case err != nil:
		errs = append(errs, withCode(ErrCodeNetworkSetup, err))
	}

	maps, err := datapath.OpenEndpointMaps(conf.BPFFSDir)
	switch {
	case errors.Is(err, datapath.ErrNotLoaded):
		log.Info("dataplane not loaded: no endpoint to remove", "bpffs_dir", conf.BPFFSDir)
	case err != nil:
		errs = append(errs, withCode(ErrCodeDatapath,
			fmt.Errorf("open dataplane under %s: %w", conf.BPFFSDir, err)))
	default:
		if err := deleteEndpoints(maps, conf, host, log); err != nil {
			errs = append(errs, withCode(ErrCodeDatapath, err))
		}
		maps.Close()
	}

	if err := datapath.DetachPod(conf.BPFFSDir, hostName); err != nil {
		errs = append(errs, withCode(ErrCodeDatapath,
			fmt.Errorf("detach pod program from %s: %w", hostName, err)))
	}
	if host != nil {
		if err := deleteHostVeth(host); err != nil {
			errs = append(errs, withCode(ErrCodeNetworkSetup, err))
		}
	}
	if err := ipamDel(ctx, conf, args.StdinData); err != nil {
		errs = append(errs, err)
	}
	return toCNIError(errors.Join(errs...))
}

// deleteEndpoints removes the endpoint entries of the pod: every entry that points to the
// host veth, and the entries of the prevResult addresses. An entry of a prevResult address
// that points to another existing interface belongs to a pod that got the address after
// this one had released it, and stays.
func deleteEndpoints(maps *datapath.EndpointMaps, conf *NetConf, host netlink.Link,
	log *slog.Logger) error {
	var errs []error
	if host != nil {
		eps, err := maps.Endpoints()
		if err != nil {
			return err
		}
		for _, ep := range eps {
			if ep.IfIndex != host.Attrs().Index {
				continue
			}
			if err := maps.DeleteEndpoint(ep.IP); err != nil {
				errs = append(errs, err)
			}
		}
	}

	var prevIPs []netip.Addr
	if conf.prevResult != nil {
		prevIPs = resultIPv4s(conf.prevResult)
	}
	for _, ip := range prevIPs {
		ep, found, err := maps.LookupEndpoint(ip)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !found {
			continue
		}
		if host == nil || ep.IfIndex != host.Attrs().Index {
			if other, err := netlink.LinkByIndex(ep.IfIndex); err == nil {
				log.Info("endpoint kept: it belongs to another interface", "ip", ip,
					"ifindex", ep.IfIndex, "owner", other.Attrs().Name)
				continue
			}
		}
		if err := maps.DeleteEndpoint(ip); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
