package main

import (
	"math"
)

// Configurations that the benchmark compares.
const (
	cfgBaseline = "baseline"
	cfgFerry    = "ferry"
	cfgCeiling  = "ceiling"
	// cfgFerryRoutes is ferry with 5,000 extra node ranges in every node's node_routes.
	cfgFerryRoutes = "ferry, 5,000 extra node ranges"
	// cfgFerryNAT is ferry with 100,000 extra entries in worker-0's NAT table.
	cfgFerryNAT = "ferry, 100,000 extra NAT entries"
	// cfgBridge is the bridge plugin alone, compared with ferry for CNI ADD and DEL.
	cfgBridge = "bridge"
)

// Paths of the traffic cases. pathCeiling is the ceiling's single veth pair.
const (
	pathSameNode   = "same node"
	pathCrossNode  = "cross node"
	pathMasquerade = "masquerade"
	pathCeiling    = "veth pair"
)

// Kinds of measurement. Each stores one value per round, except the CNI kinds, which store
// one value per pod.
const (
	kindThroughput = "TCP throughput, Gbit/s"
	kindTCPP50     = "TCP request/response p50, µs"
	kindTCPP99     = "TCP request/response p99, µs"
	kindUDPP50     = "UDP request/response p50, µs"
	kindUDPP99     = "UDP request/response p99, µs"
	kindConnRate   = "new TCP connections per second"
	// kindConntrack is the size of worker-0's netfilter connection table right after a
	// connection-rate run.
	kindConntrack = "netfilter conntrack entries on worker-0 after the run"
	kindCNIAdd    = "CNI ADD, ms"
	kindCNIDel    = "CNI DEL, ms"
	// kindProgNs is the mean run time of a BPF program per packet, from the kernel's BPF
	// statistics.
	kindProgNs = "BPF program time per packet, ns"
)

type resultKey struct {
	kind, path, config string
}

// results collects the measurements of one benchmark run.
type results struct {
	values map[resultKey][]float64
	// notes are facts found during the run, printed on the page, such as a case that
	// could not be measured.
	notes []string
	// failures holds the first error of each key that failed.
	failures map[resultKey]string
}

func newResults() *results {
	return &results{values: map[resultKey][]float64{}, failures: map[resultKey]string{}}
}

// set stores v as the value of round i. Missing earlier rounds become NaN, so that the
// values of two configurations stay paired by round.
func (r *results) set(kind, path, config string, i int, v float64) {
	k := resultKey{kind, path, config}
	vals := r.values[k]
	for len(vals) <= i {
		vals = append(vals, math.NaN())
	}
	vals[i] = v
	r.values[k] = vals
}

// add appends v to the values of the key, for kinds with one value per sample.
func (r *results) add(kind, path, config string, v float64) {
	k := resultKey{kind, path, config}
	r.values[k] = append(r.values[k], v)
}

// get returns the values of the key, NaN for rounds without a value.
func (r *results) get(kind, path, config string) []float64 {
	return r.values[resultKey{kind, path, config}]
}

// valid returns the values that are not NaN.
func valid(values []float64) []float64 {
	var out []float64
	for _, v := range values {
		if !math.IsNaN(v) {
			out = append(out, v)
		}
	}
	return out
}

func (r *results) summary(kind, path, config string) summary {
	return summarize(valid(r.get(kind, path, config)))
}

// ratio returns the summary of the per-round ratios num/den of two configurations.
func (r *results) ratio(kind, pathNum, cfgNum, pathDen, cfgDen string) summary {
	return summarize(ratios(r.get(kind, pathNum, cfgNum), r.get(kind, pathDen, cfgDen)))
}
