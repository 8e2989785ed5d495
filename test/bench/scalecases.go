package main

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/ferrynet/ferry/pkg/datapath"
	"github.com/ferrynet/ferry/test/lab"
)

// Configurations of the scale cases. Each pair is measured back to back in every round.
const (
	cfgRoutesFew  = "2 node ranges"
	cfgRoutesMany = "5,002 node ranges"
	cfgNATEmpty   = "NAT table without extra entries"
	cfgNATFull    = "NAT table with 100,000 extra entries"
)

// Kinds that only the scale cases measure.
const (
	kindRoutesLoad   = "write 5,002 node ranges (SyncNodeRoutes), ms"
	kindRoutesUnload = "shrink to 2 node ranges (SyncNodeRoutes), ms"
	kindRoutesMem    = "node_routes map memory, KiB"
	kindNATFill      = "write 100,000 NAT entries (batch update), ms"
	kindNATEntries   = "NAT entries present"
	kindNATMem       = "nat_table map memory, MiB"
	kindNATExpiry    = "one NAT expiry pass (ExpireNAT), ms"
)

// scaleState is one side of a scale case: how to enter it, and the name its results get.
type scaleState struct {
	cfg   string
	enter func() error
}

// progTimes collects the program-time runs of a scale case, two per state.
type progTimes struct {
	ns, p50, p99 map[string][]float64
}

func newProgTimes() *progTimes {
	return &progTimes{ns: map[string][]float64{}, p50: map[string][]float64{},
		p99: map[string][]float64{}}
}

// measure runs a UDP request/response test on the ferry path with BPF statistics on and
// keeps the mean run time of the programs per packet and the latency.
func (pt *progTimes) measure(ctx context.Context, b *bench, path, cfg string,
	nodes []*lab.Node, progs []string) {
	var r rrResult
	ns, err := withProgStats(nodes, progs, func() error {
		var err error
		r, err = retryOnce(func() (rrResult, error) {
			return b.requestResponse(ctx, b.ferry.paths[path], "udp", b.d.rr)
		})
		return err
	})
	if err != nil {
		b.fail(kindProgNs, path, cfg, err)
		return
	}
	pt.ns[cfg] = append(pt.ns[cfg], ns)
	pt.p50[cfg] = append(pt.p50[cfg], r.P50us)
	pt.p99[cfg] = append(pt.p99[cfg], r.P99us)
}

// store sets the mean of each configuration's runs as the round's value.
func (pt *progTimes) store(b *bench, path string, round int) {
	for kind, byCfg := range map[string]map[string][]float64{
		kindProgNs: pt.ns, kindUDPP50: pt.p50, kindUDPP99: pt.p99,
	} {
		for cfg, values := range byCfg {
			sum := 0.0
			for _, v := range values {
				sum += v
			}
			b.res.set(kind, path, cfg, round, sum/float64(len(values)))
		}
	}
}

// runScaleCase measures two states of ferry back to back, in the order of the round: each
// state gets measure, then a program-time run. A second program-time run per state
// follows in the reverse order (A B B A), so that a drift of the machine's load within the
// round cancels in their mean.
func (b *bench) runScaleCase(ctx context.Context, round int, path string, states [2]scaleState,
	nodes []*lab.Node, progs []string, measure func(cfg string)) error {
	if round%2 == 1 {
		states[0], states[1] = states[1], states[0]
	}
	pt := newProgTimes()
	for _, s := range states {
		if err := s.enter(); err != nil {
			return err
		}
		measure(s.cfg)
		pt.measure(ctx, b, path, s.cfg, nodes, progs)
	}
	pt.measure(ctx, b, path, states[1].cfg, nodes, progs)
	if err := states[0].enter(); err != nil {
		return err
	}
	pt.measure(ctx, b, path, states[0].cfg, nodes, progs)
	pt.store(b, path, round)
	return nil
}

// runRoutesScale measures ferry's cross-node path with the lab's node ranges alone and
// with 5,000 extra ranges in every node's node_routes. ferryd writes the node routes only
// at start and on SIGHUP, so the extra ranges stay until the bench removes them.
func (b *bench) runRoutesScale(ctx context.Context, round int) error {
	nodes := b.ferry.lab.Nodes
	w0 := b.ferry.lab.Node("worker-0")
	real := map[*lab.Node][]datapath.NodeRoute{}
	for _, n := range nodes {
		err := withMaps(n, func(m *datapath.Maps) error {
			var err error
			real[n], err = m.NodeRoutes()
			return err
		})
		if err != nil {
			return err
		}
	}
	many := false
	sync := func(extra bool) error {
		for _, n := range nodes {
			routes := real[n]
			if extra {
				routes = append(append([]datapath.NodeRoute(nil), routes...), extraRoutes()...)
			}
			var took time.Duration
			err := withMaps(n, func(m *datapath.Maps) error {
				start := time.Now()
				err := m.SyncNodeRoutes(routes)
				took = time.Since(start)
				return err
			})
			if err != nil {
				return err
			}
			if n != w0 || extra == many {
				continue
			}
			if extra {
				b.res.set(kindRoutesLoad, pathCrossNode, cfgFerry, round, ms(took))
			} else {
				b.res.set(kindRoutesUnload, pathCrossNode, cfgFerry, round, ms(took))
			}
		}
		many = extra
		return nil
	}
	// Whatever happens, the lab's own node routes are back at the end.
	defer sync(false)

	states := [2]scaleState{
		{cfgRoutesFew, func() error { return sync(false) }},
		{cfgRoutesMany, func() error { return sync(true) }},
	}
	measured := []*lab.Node{w0, b.ferry.lab.Node("worker-1")}
	return b.runScaleCase(ctx, round, pathCrossNode, states, measured,
		[]string{progFromPod}, func(cfg string) {
			if mem, err := mapMemlock(filepath.Join(w0.BPFFSDir(), "node_routes")); err == nil {
				b.res.set(kindRoutesMem, pathCrossNode, cfg, round, float64(mem)/1024)
			}
			b.runThroughput(ctx, b.ferry, pathCrossNode, cfg, round)
			b.runRR(ctx, b.ferry, pathCrossNode, cfg, "tcp", round)
		})
}

// runNATScale measures ferry's masquerade with worker-0's NAT table as the traffic left it
// and with 100,000 extra entries.
func (b *bench) runNATScale(ctx context.Context, round int) error {
	w0 := b.ferry.lab.Node("worker-0")
	m, err := datapath.OpenMaps(w0.BPFFSDir())
	if err != nil {
		return fmt.Errorf("open maps of %s: %w", w0.Name, err)
	}
	defer m.Close()

	// host-local hands out the lowest free addresses, so the 250th of the range stays free.
	podIP := addrAt(w0.PodCIDR, 250)
	var filler []datapath.NATEntry
	empty := func() error {
		if filler == nil {
			return nil
		}
		err := m.DeleteNATEntries(filler)
		filler = nil
		return err
	}
	// Whatever happens, the extra entries are gone at the end.
	defer empty()
	full := func() error {
		if filler != nil {
			return nil
		}
		filler = extraNATEntries(podIP, w0.IP)
		start := time.Now()
		if err := m.PutNATEntries(filler); err != nil {
			return err
		}
		b.res.set(kindNATFill, pathMasquerade, cfgFerry, round, ms(time.Since(start)))
		return nil
	}

	states := [2]scaleState{{cfgNATEmpty, empty}, {cfgNATFull, full}}
	return b.runScaleCase(ctx, round, pathMasquerade, states, []*lab.Node{w0},
		[]string{progUplinkEgress, progUplinkIngress}, func(cfg string) {
			if entries, err := m.NATEntries(); err == nil {
				b.res.set(kindNATEntries, pathMasquerade, cfg, round, float64(len(entries)))
			}
			path := filepath.Join(w0.BPFFSDir(), "nat_table")
			if mem, err := mapMemlock(path); err == nil {
				b.res.set(kindNATMem, pathMasquerade, cfg, round, float64(mem)/(1<<20))
			}
			b.runThroughput(ctx, b.ferry, pathMasquerade, cfg, round)
			b.runRR(ctx, b.ferry, pathMasquerade, cfg, "tcp", round)
			b.runConnectionRate(ctx, b.ferry, pathMasquerade, cfg, round)

			// ferryd runs the same pass every 10 seconds.
			start := time.Now()
			if _, err := m.ExpireNAT(datapath.DefaultNATTimeouts); err != nil {
				b.fail(kindNATExpiry, pathMasquerade, cfg, err)
				return
			}
			b.res.set(kindNATExpiry, pathMasquerade, cfg, round, ms(time.Since(start)))
		})
}

// withMaps runs fn with the maps pinned on node n.
func withMaps(n *lab.Node, fn func(m *datapath.Maps) error) error {
	m, err := datapath.OpenMaps(n.BPFFSDir())
	if err != nil {
		return fmt.Errorf("open maps of %s: %w", n.Name, err)
	}
	defer m.Close()
	if err := fn(m); err != nil {
		return fmt.Errorf("use maps of %s: %w", n.Name, err)
	}
	return nil
}

// addrAt returns the address offset places after the start of p.
func addrAt(p netip.Prefix, offset int) netip.Addr {
	a := p.Masked().Addr()
	for range offset {
		a = a.Next()
	}
	return a
}
