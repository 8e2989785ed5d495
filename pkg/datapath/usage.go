package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// MapUsage is the fill level of one map.
type MapUsage struct {
	Name     string
	Entries  int
	Capacity int
}

// batchSize is the number of entries that one batch lookup reads.
const batchSize = 4096

// Usage counts the entries of the maps that fill up: node routes,
// masquerade exclusions, endpoints and the NAT table. The NAT table's count
// is of entries, two per flow.
func (m *Maps) Usage() ([]MapUsage, error) {
	type counted struct {
		name  string
		mp    *ebpf.Map
		count func(*ebpf.Map) (int, error)
	}
	maps := []counted{
		{"node_routes", m.nodeRoutes, countByKeys[hostLpmV4Key]},
		{"masq_exclude", m.masqExclude, countByKeys[hostLpmV4Key]},
		{"endpoints", m.endpoints, countBatched[uint32, hostEndpoint]},
		{"nat_table", m.natTable, countBatched[hostNatKey, hostNatEntry]},
	}
	out := make([]MapUsage, 0, len(maps))
	for _, c := range maps {
		n, err := c.count(c.mp)
		if err != nil {
			return nil, fmt.Errorf("count entries of %s: %w", c.name, err)
		}
		out = append(out, MapUsage{Name: c.name, Entries: n, Capacity: int(c.mp.MaxEntries())})
	}
	return out, nil
}

// countBatched counts a hash map's entries with batch lookups, a few system
// calls for a full NAT table where a walk over its keys takes one per entry.
func countBatched[K, V any](mp *ebpf.Map) (int, error) {
	keys := make([]K, batchSize)
	values := make([]V, batchSize)
	var cursor ebpf.MapBatchCursor
	total := 0
	for {
		n, err := mp.BatchLookup(&cursor, keys, values, nil)
		total += n
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return total, nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			return countByKeys[K](mp)
		}
		if err != nil {
			return total, err
		}
	}
}

// countByKeys counts entries by walking the keys. LPM tries support no
// batch lookups.
func countByKeys[K any](mp *ebpf.Map) (int, error) {
	var (
		key   K
		value = make([]byte, mp.ValueSize())
		total int
	)
	iter := mp.Iterate()
	for iter.Next(&key, value) {
		total++
	}
	return total, iter.Err()
}
