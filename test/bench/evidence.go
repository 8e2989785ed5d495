package main

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/ferrynet/ferry/pkg/datapath"
	"github.com/ferrynet/ferry/test/lab"
)

// pathEvidence is what ferry's programs did on one path. For a UDP request and its echo,
// it records how often the programs ran, how long that took and which counters they
// incremented. For one throughput run, it records the counters with their bytes.
type pathEvidence struct {
	path     string
	requests int
	runs     float64 // program runs per request, all programs of all nodes
	ns       float64 // program time per request
	counters []string
	// perReq is the increment per request of every counter that grew, by "node: reason".
	perReq map[string]float64
	// bulk lists the counters of the throughput run with packets and mean packet size.
	bulk []string
	// bulkDrops is the number of packets that the programs dropped in the throughput run.
	bulkDrops uint64
	// fibDrop is the drop-fib-lookup counter of the throughput run.
	fibDrop counterDelta
}

// counterDelta is the change of one counter.
type counterDelta struct {
	packets, bytes uint64
}

// rrWarmup is the warm-up of the rr helper, whose messages the evidence counts too.
const rrWarmup = 200

// collectEvidence runs, on each ferry path, one UDP request/response test with BPF
// statistics on and one throughput test, and reads the change of every node's counters.
// On an error it returns the evidence of the paths before.
func (b *bench) collectEvidence(ctx context.Context) ([]pathEvidence, error) {
	nodes := b.ferry.lab.Nodes
	progs := []string{progFromPod, progUplinkIngress, progUplinkEgress}
	var out []pathEvidence
	for _, path := range trafficPaths {
		before, err := readCounters(nodes)
		if err != nil {
			return out, err
		}
		var r rrResult
		d, err := measureProgs(nodes, progs, func() error {
			var err error
			r, err = b.requestResponse(ctx, b.ferry.paths[path], "udp", b.d.rr)
			return err
		})
		if err != nil {
			return out, fmt.Errorf("collect evidence on the %s path: %w", path, err)
		}
		after, err := readCounters(nodes)
		if err != nil {
			return out, err
		}
		requests := r.Count + r.Lost + rrWarmup
		ev := pathEvidence{
			path:     path,
			requests: requests,
			runs:     float64(d.runs) / float64(requests),
			ns:       float64(d.runtime.Nanoseconds()) / float64(requests),
			perReq:   map[string]float64{},
		}
		for key, delta := range diffCounters(before, after) {
			// Counters below one in a hundred requests come from other traffic, such as
			// ARP.
			perRequest := float64(delta.packets) / float64(requests)
			ev.perReq[key] = perRequest
			if perRequest >= 0.01 {
				ev.counters = append(ev.counters, key+" "+formatValue(perRequest))
			}
		}
		slices.Sort(ev.counters)

		if err := b.collectBulk(ctx, path, &ev); err != nil {
			return out, err
		}
		out = append(out, ev)
	}
	return out, nil
}

// collectBulk runs one throughput test on the ferry path and stores the counters it moved.
func (b *bench) collectBulk(ctx context.Context, path string, ev *pathEvidence) error {
	nodes := b.ferry.lab.Nodes
	before, err := readCounters(nodes)
	if err != nil {
		return err
	}
	if _, err := b.throughput(ctx, b.ferry.paths[path], b.d); err != nil {
		return fmt.Errorf("collect evidence on the %s path: %w", path, err)
	}
	after, err := readCounters(nodes)
	if err != nil {
		return err
	}
	for key, delta := range diffCounters(before, after) {
		ev.bulk = append(ev.bulk, fmt.Sprintf("%s %s packets of %s bytes", key,
			formatCount(delta.packets),
			formatCount(delta.bytes/delta.packets)))
		reason := key[strings.Index(key, ": ")+2:]
		if strings.HasPrefix(reason, "drop-") {
			ev.bulkDrops += delta.packets
		}
		if reason == datapath.ReasonDropFIB.String() {
			ev.fibDrop.packets += delta.packets
			ev.fibDrop.bytes += delta.bytes
		}
	}
	slices.Sort(ev.bulk)
	return nil
}

// readCounters returns the counters of every node by "node: reason".
func readCounters(nodes []*lab.Node) (map[string]counterDelta, error) {
	out := map[string]counterDelta{}
	for _, n := range nodes {
		m, err := datapath.OpenMaps(n.BPFFSDir())
		if err != nil {
			return nil, fmt.Errorf("open maps of %s: %w", n.Name, err)
		}
		counters, err := m.Counters()
		m.Close()
		if err != nil {
			return nil, fmt.Errorf("read counters of %s: %w", n.Name, err)
		}
		for _, c := range counters {
			out[n.Name+": "+c.Reason.String()] = counterDelta{c.Packets, c.Bytes}
		}
	}
	return out, nil
}

// diffCounters returns the counters that grew from before to after, by how much.
func diffCounters(before, after map[string]counterDelta) map[string]counterDelta {
	out := map[string]counterDelta{}
	for key, v := range after {
		if v.packets > before[key].packets {
			out[key] = counterDelta{v.packets - before[key].packets, v.bytes - before[key].bytes}
		}
	}
	return out
}

// perRequest returns the increment per request of the counter "node: reason".
func (ev pathEvidence) perRequest(key string) float64 { return ev.perReq[key] }

// uplinkMTU returns the MTU of eth0 on node n.
func uplinkMTU(n *lab.Node) (int, error) {
	var mtu int
	err := n.Do(func() error {
		iface, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		mtu = iface.MTU
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("read MTU of eth0 on %s: %w", n.Name, err)
	}
	return mtu, nil
}

func (ev pathEvidence) row() []string {
	return []string{ev.path, formatCount(uint64(ev.requests)), formatValue(ev.runs),
		formatValue(ev.ns), strings.Join(ev.counters, "; ")}
}
