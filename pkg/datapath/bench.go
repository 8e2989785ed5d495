package datapath

import (
	"fmt"
)

// PutNATEntries writes entries into the NAT table in one batch, replacing entries with the
// same key. The programs create the entries of real flows themselves; benchmarks use this
// to fill the table with flows that no packet belongs to. Created and LastSeen are on the
// monotonic clock (CLOCK_MONOTONIC), as the programs write them.
func (m *Maps) PutNATEntries(entries []NATEntry) error {
	if len(entries) == 0 {
		return nil
	}
	keys := make([]hostNatKey, len(entries))
	values := make([]hostNatEntry, len(entries))
	for i, e := range entries {
		if !e.Src.Addr().Is4() || !e.Dst.Addr().Is4() || !e.TranslateTo.Addr().Is4() {
			return fmt.Errorf("invalid NAT entry %d (%v -> %v, to %v): want IPv4 addresses",
				i, e.Src, e.Dst, e.TranslateTo)
		}
		keys[i] = natKeyOf(e)
		values[i] = hostNatEntry{
			Addr:     be32(e.TranslateTo.Addr()),
			Port:     be16(e.TranslateTo.Port()),
			TcpFlags: e.TCPFlags,
			Created:  uint64(e.Created),
			LastSeen: uint64(e.LastSeen),
		}
	}
	if _, err := m.natTable.BatchUpdate(keys, values, nil); err != nil {
		return fmt.Errorf("write %d NAT entries: %w", len(entries), err)
	}
	return nil
}

// DeleteNATEntries removes the entries with the keys of entries. Keys that the table does
// not contain are skipped.
func (m *Maps) DeleteNATEntries(entries []NATEntry) error {
	for _, e := range entries {
		if err := m.deleteNAT(natKeyOf(e)); err != nil {
			return err
		}
	}
	return nil
}

func natKeyOf(e NATEntry) hostNatKey {
	return hostNatKey{
		Saddr: be32(e.Src.Addr()),
		Daddr: be32(e.Dst.Addr()),
		Sport: be16(e.Src.Port()),
		Dport: be16(e.Dst.Port()),
		Proto: e.Proto,
		Dir:   uint8(e.Direction),
	}
}
