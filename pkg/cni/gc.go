package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/ferrynet/ferry/pkg/datapath"
)

// Where datapath.AttachPod pins the tcx link of a pod: <bpffsDir>/links/pod_<host veth>.
const (
	podLinkPinDir    = "links"
	podLinkPinPrefix = "pod_"
)

// hostLocalDefaultDataDir is the dataDir of host-local when ipam.dataDir is unset.
const hostLocalDefaultDataDir = "/var/lib/cni/networks"

// GC implements CNI GC (CNI 1.1). It collects every attachment of this network that the
// runtime does not list in cni.dev/valid-attachments: it deletes the veth pair (and with
// it the host route), the endpoint entries and the pod program's link pin, and releases the
// addresses. It also deletes endpoint entries and link pins whose interface is gone.
//
// A veth belongs to this network when it has an entry in this dataplane's endpoints map or
// its alias names the network, so the veths of another network stay. An IPAM plugin of CNI
// 1.1 collects its own reservations. With an older one, GC releases the address of each
// collected veth by IPAM DEL, and with host-local also every reservation on disk of an
// attachment that is not valid, such as those left by a reboot.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	ctx := context.Background()
	conf, err := ParseNetConf(args.StdinData)
	if err != nil {
		return toCNIError(err)
	}
	valid := map[attachment]bool{}
	for _, a := range conf.ValidAttachments {
		valid[attachment{containerID: a.ContainerID, ifName: a.IfName}] = true
	}

	var errs []error
	maps, err := datapath.OpenEndpointMaps(conf.BPFFSDir)
	switch {
	case errors.Is(err, datapath.ErrNotLoaded):
		p.log().Info("dataplane not loaded: collecting veths by alias only",
			"bpffs_dir", conf.BPFFSDir)
		maps = nil
	case err != nil:
		return toCNIError(dataplaneError(conf.BPFFSDir, err))
	default:
		defer maps.Close()
	}
	collected, err := p.collectVeths(conf, maps, valid)
	if err != nil {
		errs = append(errs, withCode(ErrCodeDatapath, err))
	}
	if maps != nil {
		if err := p.collectOrphans(conf, maps); err != nil {
			errs = append(errs, withCode(ErrCodeDatapath, err))
		}
	}

	err = ipamGC(ctx, conf, args.StdinData)
	if errors.Is(err, errIPAMTooOld) {
		p.log().Debug("IPAM plugin predates GC: releasing addresses by DEL",
			"ipam", conf.IPAM.Type)
		err = p.releaseStale(ctx, conf, args.StdinData, valid, collected)
	}
	if err != nil {
		errs = append(errs, err)
	}
	return toCNIError(errors.Join(errs...))
}

// collectVeths deletes the host veths of this network whose attachment is not valid, with
// their endpoint entries and link pins. maps is nil when no dataplane is loaded. It returns
// the attachments that the aliases of the deleted veths name.
func (p *Plugin) collectVeths(conf *NetConf, maps *datapath.EndpointMaps,
	valid map[attachment]bool) ([]attachment, error) {
	validNames := map[string]bool{}
	for a := range valid {
		validNames[HostVethName(a.containerID, a.ifName)] = true
	}
	endpoints := map[int][]netip.Addr{}
	if maps != nil {
		eps, err := maps.Endpoints()
		if err != nil {
			return nil, err
		}
		for _, ep := range eps {
			endpoints[ep.IfIndex] = append(endpoints[ep.IfIndex], ep.IP)
		}
	}
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}

	var collected []attachment
	var errs []error
	for _, link := range links {
		name, index := link.Attrs().Name, link.Attrs().Index
		if link.Type() != "veth" || !isHostVethName(name) || validNames[name] {
			continue
		}
		att, hasAlias := parseAttachmentAlias(link.Attrs().Alias, conf.Name)
		if !hasAlias && len(endpoints[index]) == 0 {
			continue
		}
		p.log().Info("collect stale attachment", "interface", name,
			"container_id", att.containerID, "ips", endpoints[index])
		for _, ip := range endpoints[index] {
			if err := maps.DeleteEndpoint(ip); err != nil {
				errs = append(errs, err)
			}
		}
		if err := datapath.DetachPod(conf.BPFFSDir, name); err != nil {
			errs = append(errs, fmt.Errorf("detach pod program from %s: %w", name, err))
		}
		if err := deleteHostVeth(link); err != nil {
			errs = append(errs, err)
			continue
		}
		if hasAlias {
			collected = append(collected, att)
		}
	}
	return collected, errors.Join(errs...)
}

// collectOrphans deletes the endpoint entries and pod link pins whose interface is gone, as
// a crash between deleting a veth and cleaning up after it leaves them.
func (p *Plugin) collectOrphans(conf *NetConf, maps *datapath.EndpointMaps) error {
	eps, err := maps.Endpoints()
	if err != nil {
		return err
	}
	var errs []error
	for _, ep := range eps {
		_, err := netlink.LinkByIndex(ep.IfIndex)
		var notFound netlink.LinkNotFoundError
		switch {
		case errors.As(err, &notFound):
			p.log().Info("delete endpoint of a deleted interface", "ip", ep.IP,
				"ifindex", ep.IfIndex)
			if err := maps.DeleteEndpoint(ep.IP); err != nil {
				errs = append(errs, err)
			}
		case err != nil:
			errs = append(errs, fmt.Errorf("find interface %d of endpoint %s: %w",
				ep.IfIndex, ep.IP, err))
		}
	}

	pins, err := os.ReadDir(filepath.Join(conf.BPFFSDir, podLinkPinDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return errors.Join(append(errs, fmt.Errorf("list pod link pins: %w", err))...)
	}
	for _, pin := range pins {
		name, ok := strings.CutPrefix(pin.Name(), podLinkPinPrefix)
		if !ok || !isHostVethName(name) {
			continue
		}
		_, err := netlinksafe.LinkByName(name)
		var notFound netlink.LinkNotFoundError
		if !errors.As(err, &notFound) {
			continue
		}
		p.log().Info("delete link pin of a deleted interface", "interface", name)
		if err := datapath.DetachPod(conf.BPFFSDir, name); err != nil {
			errs = append(errs, fmt.Errorf("remove link pin of %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// releaseStale releases, by IPAM DEL, the addresses of the collected attachments and, with
// host-local, those of every reservation of an attachment that is not valid.
func (p *Plugin) releaseStale(ctx context.Context, conf *NetConf, stdin []byte,
	valid map[attachment]bool, collected []attachment) error {
	release := slices.Clone(collected)
	if conf.IPAM.Type == "host-local" {
		reserved, err := hostLocalReservations(conf, stdin)
		if err != nil {
			return err
		}
		for _, a := range reserved {
			if !valid[a] && !slices.Contains(release, a) {
				release = append(release, a)
			}
		}
	}

	var errs []error
	for _, a := range release {
		p.log().Info("release address of stale attachment", "container_id", a.containerID,
			"ifname", a.ifName)
		if err := ipamDelAttachment(ctx, conf, stdin, a); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ipamDelAttachment runs IPAM DEL for an attachment other than the one in the environment.
func ipamDelAttachment(ctx context.Context, conf *NetConf, stdin []byte, a attachment) error {
	// The attachment's namespace and arguments are unknown; DEL needs neither.
	err := callIPAM(ctx, conf, stdin, "0.1.0", func(netconf []byte) error {
		return delegate(ctx, conf.IPAM.Type, "DEL", netconf, "CNI_CONTAINERID="+a.containerID,
			"CNI_IFNAME="+a.ifName, "CNI_NETNS=", "CNI_ARGS=")
	})
	if err != nil {
		return fmt.Errorf("release address of container %s interface %s with IPAM plugin "+
			"%s: %w", a.containerID, a.ifName, conf.IPAM.Type, err)
	}
	return nil
}

// hostLocalReservations returns the attachments that host-local holds addresses for in this
// network. host-local keeps one file per address in <dataDir>/<network>, named after the
// address, that contains the container ID and, since plugins v0.9, a line with the
// interface name. A file of the older form names no interface; it counts as eth0's.
func hostLocalReservations(conf *NetConf, stdin []byte) ([]attachment, error) {
	var ipamConf struct {
		IPAM struct {
			DataDir string `json:"dataDir"`
		} `json:"ipam"`
	}
	if err := json.Unmarshal(stdin, &ipamConf); err != nil {
		return nil, fmt.Errorf("decode ipam.dataDir: %w", err)
	}
	dataDir := ipamConf.IPAM.DataDir
	if dataDir == "" {
		dataDir = hostLocalDefaultDataDir
	}
	dir := filepath.Join(dataDir, conf.Name)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list host-local reservations: %w", err)
	}

	var out []attachment
	for _, e := range entries {
		if _, err := netip.ParseAddr(e.Name()); err != nil || !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read host-local reservation: %w", err)
		}
		lines := strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")
		a := attachment{containerID: strings.TrimSpace(lines[0]), ifName: "eth0"}
		if len(lines) > 1 && strings.TrimSpace(lines[1]) != "" {
			a.ifName = strings.TrimSpace(lines[1])
		}
		if a.containerID != "" && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out, nil
}
