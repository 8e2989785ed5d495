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

	// Migrations lists the pinned maps that Load replaced because their
	// layout or size differed from this version's.
	Migrations []MapMigration
	// RemovedPins lists the pins under Dir that Load deleted because this
	// version has no such object, such as the maps and programs of older
	// names and the temporary pins of an interrupted start.
	RemovedPins []string

	fromPod       *ebpf.Program
	uplinkIngress *ebpf.Program
	uplinkEgress  *ebpf.Program
	migrations    []*MapMigration
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

	cache := btf.NewCache()
	if err := checkKernel(cache, hostSpec, podSpec); err != nil {
		return nil, fmt.Errorf("check kernel: %w", err)
	}
	// Maps pinned by an earlier version in another layout are converted
	// and replaced first, so that loading reuses every pinned map.
	migrations, err := adoptPinnedMaps(dir, hostSpec, podSpec)
	if err != nil {
		return nil, err
	}
	closeMigrations := func() {
		for _, m := range migrations {
			m.close()
		}
	}
	collOpts := &ebpf.CollectionOptions{
		Maps:  ebpf.MapOptions{PinPath: dir},
		Cache: cache,
	}
	var host hostObjects
	if err := hostSpec.LoadAndAssign(&host, collOpts); err != nil {
		closeMigrations()
		return nil, explainLoadError("host programs", dir, err)
	}
	var pod podObjects
	if err := podSpec.LoadAndAssign(&pod, collOpts); err != nil {
		host.Close()
		closeMigrations()
		return nil, explainLoadError("pod program", dir, err)
	}
	// The pod object shares the pinned maps; its own handles are not needed.
	closeAll(pod.Counters, pod.Endpoints, pod.MasqExclude, pod.NatTable, pod.NodeConfig,
		pod.NodeRoutes)

	d := &Datapath{
		Dir: dir,
		Maps: Maps{
			EndpointMaps: EndpointMaps{endpoints: host.Endpoints, nodeConfig: host.NodeConfig},
			nodeRoutes:   host.NodeRoutes,
			masqExclude:  host.MasqExclude,
			natTable:     host.NatTable,
			counters:     host.Counters,
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
	d.migrations = migrations
	for _, m := range migrations {
		d.Migrations = append(d.Migrations, m.report())
	}
	d.RemovedPins, err = removeStalePins(dir, hostSpec, podSpec)
	if err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func explainLoadError(what, dir string, err error) error {
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		return fmt.Errorf("load %s: the kernel verifier rejected it: %+v", what, verr)
	}
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		// Load converts incompatible pinned maps first: another process
		// pinned one in between.
		return fmt.Errorf("load %s: a map pinned under %s changed while ferryd started; "+
			"stop other ferryd processes of this node and start again: %w", what, dir, err)
	}
	return fmt.Errorf("load %s: %w", what, err)
}

// Close releases the file descriptors. Pinned objects and attachments stay.
func (d *Datapath) Close() error {
	for _, m := range d.migrations {
		m.close()
	}
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
