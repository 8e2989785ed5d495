package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// DefaultNATEntries sizes the NAT table for 256k flows: each flow has an
// entry per direction.
const DefaultNATEntries = 2 * 256 * 1024

// LoadOptions tune Load.
type LoadOptions struct {
	// NATEntries is the capacity of the NAT table in entries (two per flow);
	// zero means DefaultNATEntries.
	NATEntries uint32
}

// Datapath is the loaded dataplane of one node: its maps and programs,
// pinned under Dir.
type Datapath struct {
	Dir string
	Maps

	fromPod       *ebpf.Program
	uplinkIngress *ebpf.Program
	uplinkEgress  *ebpf.Program
}

// Load loads ferry's programs, creates or reuses the maps pinned under dir
// (mounting a bpffs there when needed), and pins the programs, replacing
// earlier versions. Nothing is attached yet. Entries of pinned maps survive,
// so a restarted or upgraded agent keeps its routes, endpoints and NAT state.
func Load(dir string, opts LoadOptions) (*Datapath, error) {
	if err := ensureBPFFS(dir); err != nil {
		return nil, err
	}
	for _, sub := range []string{progsDir, linksDir} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", sub, err)
		}
	}

	hostSpec, err := loadHost()
	if err != nil {
		return nil, fmt.Errorf("load host program spec: %w", err)
	}
	podSpec, err := loadPod()
	if err != nil {
		return nil, fmt.Errorf("load pod program spec: %w", err)
	}
	entries := opts.NATEntries
	if entries == 0 {
		entries = DefaultNATEntries
	}
	for _, spec := range []*ebpf.CollectionSpec{hostSpec, podSpec} {
		if m, ok := spec.Maps["nat_table"]; ok {
			m.MaxEntries = entries
		}
	}

	collOpts := &ebpf.CollectionOptions{
		Maps:  ebpf.MapOptions{PinPath: dir},
		Cache: btf.NewCache(),
	}
	var host hostObjects
	if err := hostSpec.LoadAndAssign(&host, collOpts); err != nil {
		return nil, explainLoadError("host programs", dir, err)
	}
	var pod podObjects
	if err := podSpec.LoadAndAssign(&pod, collOpts); err != nil {
		host.Close()
		return nil, explainLoadError("pod program", dir, err)
	}
	// The pod object shares the pinned maps; its own handles are not needed.
	closeAll(pod.Counters, pod.Endpoints, pod.MasqExclude, pod.NatTable, pod.NodeConfig,
		pod.NodeRoutes)

	d := &Datapath{
		Dir: dir,
		Maps: Maps{
			nodeRoutes:  host.NodeRoutes,
			masqExclude: host.MasqExclude,
			endpoints:   host.Endpoints,
			nodeConfig:  host.NodeConfig,
			natTable:    host.NatTable,
			counters:    host.Counters,
		},
		fromPod:       pod.FerryFromPod,
		uplinkIngress: host.FerryUplinkIngress,
		uplinkEgress:  host.FerryUplinkEgress,
	}
	pins := map[string]*ebpf.Program{
		progFromPod:       d.fromPod,
		progUplinkIngress: d.uplinkIngress,
		progUplinkEgress:  d.uplinkEgress,
	}
	for name, prog := range pins {
		if err := pinAtomically(filepath.Join(dir, progsDir, name), prog.Pin); err != nil {
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

func explainLoadError(what, dir string, err error) error {
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		return fmt.Errorf("load %s: the kernel verifier rejected it: %+v", what, verr)
	}
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return fmt.Errorf("load %s: a map pinned under %s has another layout or size than "+
			"this version needs; remove it (ferryd --remove) to start with empty maps: %w",
			what, dir, err)
	}
	return fmt.Errorf("load %s: %w", what, err)
}

// Close releases the file descriptors. Pinned objects and attachments stay.
func (d *Datapath) Close() error {
	closeAll(d.fromPod, d.uplinkIngress, d.uplinkEgress)
	return d.Maps.Close()
}

type closer interface{ Close() error }

func closeAll[T closer](items ...T) {
	for _, item := range items {
		if any(item) != nil {
			_ = item.Close()
		}
	}
}
