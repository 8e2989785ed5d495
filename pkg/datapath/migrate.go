package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
)

// MapMigration reports a pinned map whose layout or size differed from what
// this version of the programs needs, and which Load replaced.
type MapMigration struct {
	Map string
	// Change describes the difference, such as "ValueSize: 12 changed to 16".
	Change string
	// Copied counts the entries converted into the new map.
	Copied int
	// Emptied is set when the entries could not be converted and the map
	// started empty. Load does so only for maps that ferryd fills again at
	// start, and for the counters.
	Emptied bool
	// Why is the reason for Emptied.
	Why string

	old  *ebpf.Map
	next *ebpf.Map
	key  conversion
	val  conversion
}

// refilled are the maps whose entries ferryd writes at every start, so that
// an incompatible pinned one may start empty. The counters restart from zero
// like the counters of a rebooted node.
var refilled = map[string]bool{
	"node_config":  true,
	"node_routes":  true,
	"masq_exclude": true,
	"counters":     true,
}

// ErrMapLayout is returned by Load when a pinned map has entries that this
// version cannot convert and that ferryd cannot restore.
var ErrMapLayout = errors.New("pinned map has an incompatible layout")

// adoptPinnedMaps checks every map of spec that is pinned under dir against
// the layout spec needs. A map whose type, sizes, flags or fields differ is
// replaced by a new map of the new layout that holds the old entries,
// converted field by field by their BTF names, and the new map takes the
// pin. The old maps stay open in the returned migrations until
// finishMigrations.
func adoptPinnedMaps(dir string, specs ...*ebpf.CollectionSpec) ([]*MapMigration, error) {
	var done []*MapMigration
	fail := func(err error) ([]*MapMigration, error) {
		for _, m := range done {
			m.close()
		}
		return nil, err
	}
	seen := map[string]bool{}
	for name, ms := range pinnedMapSpecs(specs) {
		if seen[name] {
			continue
		}
		seen[name] = true
		path := filepath.Join(dir, name)
		old, err := ebpf.LoadPinnedMap(path, nil)
		if isNotExist(err) {
			continue
		}
		if err != nil {
			return fail(fmt.Errorf("open pinned map %s: %w", path, err))
		}
		change, err := layoutChange(ms, old)
		if err != nil {
			old.Close()
			return fail(err)
		}
		if change == "" {
			old.Close()
			continue
		}
		m, err := migrateMap(path, ms, old, change)
		if err != nil {
			old.Close()
			return fail(err)
		}
		done = append(done, m)
	}
	return done, nil
}

// pinnedMapSpecs yields the maps of specs that are pinned by name, in a
// stable order.
func pinnedMapSpecs(specs []*ebpf.CollectionSpec) func(func(string, *ebpf.MapSpec) bool) {
	return func(yield func(string, *ebpf.MapSpec) bool) {
		for _, spec := range specs {
			for _, name := range slices.Sorted(maps.Keys(spec.Maps)) {
				ms := spec.Maps[name]
				if ms.Pinning == ebpf.PinByName && !yield(name, ms) {
					return
				}
			}
		}
	}
}

// FinishMigrations copies the entries that the programs of the previous
// start added to the replaced maps since Load, then releases those maps.
// Call it once the new programs are attached everywhere, so that no old
// program writes to them any more. It returns the number of entries added.
func (d *Datapath) FinishMigrations() (int, error) {
	var (
		total int
		errs  []error
	)
	for _, m := range d.migrations {
		n, err := m.finish()
		total += n
		if err != nil {
			errs = append(errs, fmt.Errorf("finish migration of map %s: %w", m.Map, err))
		}
	}
	d.migrations = nil
	return total, errors.Join(errs...)
}

// layoutChange describes how the pinned map old differs from ms, or returns
// "" when the programs can use it as it is.
func layoutChange(ms *ebpf.MapSpec, old *ebpf.Map) (string, error) {
	if err := ms.Compatible(old); err != nil {
		if !errors.Is(err, ebpf.ErrMapIncompatible) {
			return "", fmt.Errorf("check pinned map %s: %w", ms.Name, err)
		}
		return strings.TrimSuffix(err.Error(), ": "+ebpf.ErrMapIncompatible.Error()), nil
	}
	// Same sizes may still hide moved or renamed fields.
	oldKey, oldValue, err := pinnedLayouts(old)
	if err != nil {
		return "", err
	}
	if !oldKey.equal(layoutOf(ms.Key, ms.KeySize)) {
		return "key fields changed", nil
	}
	if !oldValue.equal(layoutOf(ms.Value, ms.ValueSize)) {
		return "value fields changed", nil
	}
	return "", nil
}

// migrateMap creates the map of ms, copies old's entries into it and pins it
// at path in place of old.
func migrateMap(path string, ms *ebpf.MapSpec, old *ebpf.Map, change string) (*MapMigration,
	error) {
	m := &MapMigration{Map: ms.Name, Change: change, old: old}
	why := convertible(ms, old, m)

	spec := ms.Copy()
	spec.Pinning = ebpf.PinNone
	next, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, fmt.Errorf("create map %s in its new layout: %w", ms.Name, err)
	}
	m.next = next

	if why == "" {
		m.Copied, err = m.copyEntries(ebpf.UpdateAny)
		if err != nil {
			why = err.Error()
		}
	}
	if why != "" {
		if !refilled[ms.Name] {
			next.Close()
			return nil, refuseMigration(ms.Name, path, change, why)
		}
		next.Close()
		if next, err = ebpf.NewMap(spec); err != nil {
			return nil, fmt.Errorf("create map %s in its new layout: %w", ms.Name, err)
		}
		m.next, m.Copied, m.Emptied, m.Why = next, 0, true, why
	}

	if err := pinAtomically(path, next.Pin); err != nil {
		next.Close()
		return nil, fmt.Errorf("replace pinned map %s: %w", path, err)
	}
	return m, nil
}

// convertible plans the conversion of old's entries into the layout of ms
// and returns why they cannot be converted, or "".
func convertible(ms *ebpf.MapSpec, old *ebpf.Map, m *MapMigration) string {
	if old.Type() != ms.Type {
		return fmt.Sprintf("the map type changed from %s to %s", old.Type(), ms.Type)
	}
	if ms.Type == ebpf.PerCPUArray || ms.Type == ebpf.PerCPUHash || ms.Type == ebpf.LRUCPUHash {
		return "per-CPU values are not converted"
	}
	oldKey, oldValue, err := pinnedLayouts(old)
	if err != nil {
		return err.Error()
	}
	if m.key, err = planConversion(oldKey, layoutOf(ms.Key, ms.KeySize), true); err != nil {
		return "key: " + err.Error()
	}
	if m.val, err = planConversion(oldValue, layoutOf(ms.Value, ms.ValueSize), false); err != nil {
		return "value: " + err.Error()
	}
	return ""
}

func refuseMigration(name, path, change, why string) error {
	lost := "its entries"
	switch name {
	case "endpoints":
		lost = "the pods on this node, which lose their network until they are created again"
	case "nat_table":
		lost = "the masqueraded connections, which are reset"
	}
	return fmt.Errorf("%w: map %s pinned at %s (%s): %s. Starting would lose %s: "+
		"run the ferryd version that pinned it, or remove the dataplane with "+
		"ferryd --remove to start with empty maps", ErrMapLayout, name, path, change, why, lost)
}

// copyEntries converts every entry of the old map into the new one with
// flags, and returns how many it wrote. With ebpf.UpdateNoExist it adds
// only the entries that the new map lacks.
func (m *MapMigration) copyEntries(flags ebpf.MapUpdateFlags) (int, error) {
	key := make([]byte, m.old.KeySize())
	value := make([]byte, m.old.ValueSize())
	isArray := m.old.Type() == ebpf.Array
	copied := 0
	iter := m.old.Iterate()
	for iter.Next(key, value) {
		k, v := m.key.apply(key), m.val.apply(value)
		if isArray {
			// Array entries always exist: the first copy writes the converted
			// values over the new map's zeros, up to its new size.
			if flags == ebpf.UpdateNoExist || binary.NativeEndian.Uint32(k) >= m.next.MaxEntries() {
				continue
			}
		}
		err := m.next.Update(k, v, flags)
		if errors.Is(err, ebpf.ErrKeyExist) {
			continue
		}
		if err != nil {
			return copied, fmt.Errorf("copy entry %d into the new map: %w", copied+1, err)
		}
		copied++
	}
	if err := iter.Err(); err != nil {
		return copied, fmt.Errorf("read entries of the old map: %w", err)
	}
	return copied, nil
}

// finish copies the entries that the old programs added to the old map
// after the first copy, then releases the old map.
func (m *MapMigration) finish() (int, error) {
	defer m.close()
	if m.Emptied {
		return 0, nil
	}
	return m.copyEntries(ebpf.UpdateNoExist)
}

// report returns m without its maps.
func (m *MapMigration) report() MapMigration {
	return MapMigration{Map: m.Map, Change: m.Change, Copied: m.Copied, Emptied: m.Emptied,
		Why: m.Why}
}

func (m *MapMigration) close() {
	closeAll(m.old, m.next)
	m.old, m.next = nil, nil
}
