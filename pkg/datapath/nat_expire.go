package datapath

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
)

// The NAT table is a plain hash map: the kernel never evicts an entry, so
// a flow loses its mapping only here, both entries together, and a flow in
// use keeps its node port however full the table gets. When the table is
// full the programs drop new flows and count them as drop-nat-table-full.
const (
	// natPressureNum/natPressureDen is the share of the table above which
	// ExpireNAT also reclaims flows that are not in use.
	natPressureNum = 3
	natPressureDen = 4
	// natPressureMinIdle is how long a flow that is closing, in its TCP
	// handshake or without reply must have been idle before ExpireNAT
	// reclaims it early. It spares flows whose next packet is on its way.
	natPressureMinIdle = 5 * time.Second
)

// ExpireNAT deletes the flows idle for longer than their state's timeout and
// returns how many flows it removed. Both entries of a flow go together, the
// ingress entry first, and a flow is judged by the later of the two
// last-seen times. When more than three quarters of the table remain in
// use, flows that are closing, still in their TCP handshake or without reply
// are removed early once idle for 5 seconds. Established and replied flows
// keep their mapping until their own timeout.
func (m *Maps) ExpireNAT(timeouts NATTimeouts) (int, error) {
	entries, err := m.readNAT()
	if err != nil {
		return 0, err
	}

	now := monotonicNow()
	removed, err := m.expireFlows(entries, func(f NATFlow) bool {
		return now-f.LastSeen >= timeouts.Timeout(f.Proto, f.State)
	})
	if err != nil {
		return removed, err
	}
	// An orphan is only ever needed between a claim and its egress insert.
	orphanIdle := min(timeouts.TCPHandshake, timeouts.TCPEstablished, timeouts.TCPClosing,
		timeouts.UDP, timeouts.ICMP)
	if err := m.expireOrphans(entries, now, orphanIdle); err != nil {
		return removed, err
	}

	capacity := int(m.natTable.MaxEntries())
	if len(entries)*natPressureDen <= capacity*natPressureNum {
		return removed, nil
	}
	early, err := m.expireFlows(entries, func(f NATFlow) bool {
		if f.State == NATTCPEstablished || f.State == NATReplied {
			return false
		}
		return now-f.LastSeen >= natPressureMinIdle
	})
	return removed + early, err
}

// expireFlows deletes the flows in entries for which expired returns true
// and removes their entries from the snapshot.
func (m *Maps) expireFlows(entries natSnapshot,
	expired func(NATFlow) bool) (int, error) {
	removed := 0
	for key, out := range entries {
		if NATDirection(key.Dir) != NATEgress {
			continue
		}
		if !expired(entries.flow(key, out)) {
			continue
		}
		inKey := ingressKeyOf(key, out)
		// A packet may have used the flow since the snapshot was taken.
		if m.usedSince(key, out) || m.usedSince(inKey, entries[inKey]) {
			continue
		}
		// The ingress entry goes first: without it no reply is translated, so
		// the egress entry is never left pointing at a port another flow took.
		if err := m.deleteNAT(inKey); err != nil {
			return removed, err
		}
		if err := m.deleteNAT(key); err != nil {
			return removed, err
		}
		delete(entries, inKey)
		delete(entries, key)
		removed++
	}
	return removed, nil
}

// expireOrphans deletes ingress entries without egress entry, leftovers of
// a claim whose egress insert failed, once idle for longer than idle.
// NOTE: a flow whose egress entry was deleted by hand also leaves one.
func (m *Maps) expireOrphans(entries natSnapshot, now, idle time.Duration) error {
	for key, in := range entries {
		if NATDirection(key.Dir) != NATIngress {
			continue
		}
		if _, ok := entries[egressKeyOf(key, in)]; ok {
			continue
		}
		if now-time.Duration(in.LastSeen) < idle {
			continue
		}
		if err := m.deleteNAT(key); err != nil {
			return err
		}
		delete(entries, key)
	}
	return nil
}

// usedSince reports whether the entry under key was used after the snapshot
// value seen was read.
func (m *Maps) usedSince(key hostNatKey, seen hostNatEntry) bool {
	var now hostNatEntry
	if err := m.natTable.Lookup(key, &now); err != nil {
		return false
	}
	return now.LastSeen != seen.LastSeen
}

func (m *Maps) deleteNAT(key hostNatKey) error {
	err := m.natTable.Delete(key)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete NAT entry: %w", err)
	}
	return nil
}
