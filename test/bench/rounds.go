package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ferrynet/ferry/test/lab"
)

// bench runs the cases and stores their results.
type bench struct {
	*env
	res    *results
	d      durations
	rounds int
}

// fail logs a failed measurement and notes the first failure of each key on the page.
func (b *bench) fail(kind, path, config string, err error) {
	log.Printf("bench: %s, %s, %s failed: %v", kind, path, config, err)
	k := resultKey{kind, path, config}
	if _, ok := b.res.failures[k]; ok {
		return
	}
	where := config
	if path != "" {
		where = path + ", " + config
	}
	// The error may quote a process's log, line by line; the page lists it on one line.
	msg := strings.Join(strings.Fields(err.Error()), " ")
	b.res.failures[k] = msg
	b.res.notes = append(b.res.notes, fmt.Sprintf("%s (%s) failed at least once: %s",
		kind, where, msg))
}

// retryOnce runs fn again when it fails, because a single run can fail for reasons that
// have nothing to do with the dataplane, such as a timeout on a loaded machine.
func retryOnce[T any](fn func() (T, error)) (T, error) {
	v, err := fn()
	if err != nil {
		v, err = fn()
	}
	return v, err
}

func (b *bench) runThroughput(ctx context.Context, dp *dataplane, path, cfg string,
	round int) {
	v, err := retryOnce(func() (float64, error) {
		return b.throughput(ctx, dp.paths[path], b.d)
	})
	if err != nil {
		b.fail(kindThroughput, path, cfg, err)
		return
	}
	b.res.set(kindThroughput, path, cfg, round, v)
}

func (b *bench) runRR(ctx context.Context, dp *dataplane, path, cfg, proto string,
	round int) {
	r, err := retryOnce(func() (rrResult, error) {
		return b.requestResponse(ctx, dp.paths[path], proto, b.d.rr)
	})
	p50, p99 := kindTCPP50, kindTCPP99
	if proto == "udp" {
		p50, p99 = kindUDPP50, kindUDPP99
	}
	if err != nil {
		b.fail(p50, path, cfg, err)
		return
	}
	b.res.set(p50, path, cfg, round, r.P50us)
	b.res.set(p99, path, cfg, round, r.P99us)
}

func (b *bench) runConnectionRate(ctx context.Context, dp *dataplane, path, cfg string,
	round int) {
	v, err := retryOnce(func() (float64, error) {
		return b.connectionRate(ctx, dp.paths[path], b.d.connections)
	})
	if err != nil {
		b.fail(kindConnRate, path, cfg, err)
		return
	}
	b.res.set(kindConnRate, path, cfg, round, v)
	if path != pathMasquerade {
		return
	}
	count, err := conntrackCount(dp.lab.Node("worker-0"))
	if err != nil {
		b.fail(kindConntrack, path, cfg, err)
		return
	}
	b.res.set(kindConntrack, path, cfg, round, float64(count))
}

// conntrackCount returns the number of entries in the netfilter connection table of n.
func conntrackCount(n *lab.Node) (int, error) {
	var count int
	err := n.Do(func() error {
		data, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_count")
		if err != nil {
			return err
		}
		count, err = strconv.Atoi(strings.TrimSpace(string(data)))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("read conntrack count of %s: %w", n.Name, err)
	}
	return count, nil
}

// pair returns the baseline and ferry in the order of the round, so that neither is always
// measured first.
func (b *bench) pair(round int) []*dataplane {
	if round%2 == 0 {
		return []*dataplane{b.base, b.ferry}
	}
	return []*dataplane{b.ferry, b.base}
}

// warmUp sends traffic on every path once, until it succeeds, so that neighbour caches,
// connection tracking and the servers are ready before the first round.
func (b *bench) warmUp(ctx context.Context, quick bool) error {
	dps := []*dataplane{b.base, b.ferry}
	if !quick {
		dps = append(dps, b.ceiling)
	}
	for _, dp := range dps {
		for _, t := range dp.paths {
			var err error
			for range 20 {
				if _, err = b.requestResponse(ctx, t, "tcp", 100*time.Millisecond); err == nil {
					break
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(250 * time.Millisecond):
				}
			}
			if err != nil {
				return fmt.Errorf("warm up %s path to %s: %w", dp.name, t.server, err)
			}
		}
	}
	return nil
}

// runQuickRound measures cross-node throughput and latency of the baseline and ferry.
func (b *bench) runQuickRound(ctx context.Context, round int) {
	for _, dp := range b.pair(round) {
		b.runThroughput(ctx, dp, pathCrossNode, dp.name, round)
	}
	for _, proto := range []string{"tcp", "udp"} {
		for _, dp := range b.pair(round) {
			b.runRR(ctx, dp, pathCrossNode, dp.name, proto, round)
		}
	}
}

// trafficPaths are the paths that the baseline and ferry both have.
var trafficPaths = []string{pathSameNode, pathCrossNode, pathMasquerade}

// runRound measures every traffic case on the baseline, ferry and the ceiling, then the
// scale cases of ferry.
func (b *bench) runRound(ctx context.Context, round int) error {
	for _, path := range trafficPaths {
		for _, dp := range b.pair(round) {
			b.runThroughput(ctx, dp, path, dp.name, round)
		}
	}
	b.runThroughput(ctx, b.ceiling, pathCeiling, cfgCeiling, round)

	for _, proto := range []string{"tcp", "udp"} {
		for _, path := range trafficPaths {
			for _, dp := range b.pair(round) {
				b.runRR(ctx, dp, path, dp.name, proto, round)
			}
		}
		b.runRR(ctx, b.ceiling, pathCeiling, cfgCeiling, proto, round)
	}

	for _, dp := range b.pair(round) {
		b.runConnectionRate(ctx, dp, pathMasquerade, dp.name, round)
	}
	b.runConnectionRate(ctx, b.ceiling, pathCeiling, cfgCeiling, round)

	if err := b.runRoutesScale(ctx, round); err != nil {
		return err
	}
	return b.runNATScale(ctx, round)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }
