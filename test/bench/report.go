package main

import (
	"fmt"
	"strings"
)

// page is everything the report shows besides the results.
type page struct {
	machine  machineInfo
	rounds   int
	d        durations
	evidence []pathEvidence
	// uplinkMTU is the MTU of eth0 on worker-0 of the ferry lab.
	uplinkMTU int
	elapsed   string
}

// goal is one target for ferry's figures, checked against the results of the run.
type goal struct {
	// id names the goal for the findings, such as "cross-node throughput vs baseline".
	id       string
	name     string
	measured string
	// met is nil when the run has no figure for the target.
	met *bool
}

func verdict(t goal) string {
	switch {
	case t.met == nil:
		return "not measured"
	case *t.met:
		return "met"
	default:
		return "not met"
	}
}

// check returns a pointer to ok, or nil when any summary has no values.
func check(ok bool, inputs ...summary) *bool {
	for _, s := range inputs {
		if s.N == 0 {
			return nil
		}
	}
	return &ok
}

// Identifiers of the goals. Every latency goal has goalLatency.
const (
	goalThroughputBaseline = "cross-node throughput vs baseline"
	goalThroughputCeiling  = "cross-node throughput vs ceiling"
	goalLatency            = "latency"
	goalConnRate           = "connection rate"
	goalCNIAdd             = "CNI ADD"
	goalFlat               = "flat per-packet cost"
)

// Thresholds of the targets, as ratios of medians.
const (
	minThroughputVsBaseline = 1.2
	minThroughputVsCeiling  = 0.8
	maxLatencyVsBaseline    = 0.75
	minConnRateVsBaseline   = 1.0
	maxCNIAddVsBridge       = 1.0
	// flatTolerance is how far a figure may move from 2 to 5,002 node ranges and still
	// count as flat.
	flatTolerance = 0.10
)

// goals checks the figures of the run against ferry's targets.
func goals(r *results) []goal {
	var out []goal
	tput := r.ratio(kindThroughput, pathCrossNode, cfgFerry, pathCrossNode, cfgBaseline)
	out = append(out, goal{
		id:       goalThroughputBaseline,
		name:     fmt.Sprintf("cross-node TCP throughput ≥ %.1fx baseline", minThroughputVsBaseline),
		measured: formatRatio(tput),
		met:      check(tput.Median >= minThroughputVsBaseline, tput),
	})
	tputCeil := r.ratio(kindThroughput, pathCrossNode, cfgFerry, pathCeiling, cfgCeiling)
	out = append(out, goal{
		id:       goalThroughputCeiling,
		name:     fmt.Sprintf("cross-node TCP throughput ≥ %.1fx ceiling", minThroughputVsCeiling),
		measured: formatRatio(tputCeil),
		met:      check(tputCeil.Median >= minThroughputVsCeiling, tputCeil),
	})
	for _, proto := range []struct{ name, p50, p99 string }{
		{"TCP", kindTCPP50, kindTCPP99}, {"UDP", kindUDPP50, kindUDPP99},
	} {
		for _, path := range trafficPaths {
			p50 := r.ratio(proto.p50, path, cfgFerry, path, cfgBaseline)
			p99 := r.ratio(proto.p99, path, cfgFerry, path, cfgBaseline)
			out = append(out, goal{
				id: goalLatency,
				name: fmt.Sprintf("%s request/response latency, %s, p50 and p99 ≤ %.2fx "+
					"baseline", proto.name, path, maxLatencyVsBaseline),
				measured: "p50 " + formatRatio(p50) + ", p99 " + formatRatio(p99),
				met: check(p50.Median <= maxLatencyVsBaseline &&
					p99.Median <= maxLatencyVsBaseline, p50, p99),
			})
		}
	}
	conn := r.ratio(kindConnRate, pathMasquerade, cfgFerry, pathMasquerade, cfgBaseline)
	out = append(out, goal{
		id:       goalConnRate,
		name:     fmt.Sprintf("masquerade connection rate ≥ %.1fx baseline", minConnRateVsBaseline),
		measured: formatRatio(conn),
		met:      check(conn.Median >= minConnRateVsBaseline, conn),
	})
	addFerry := percentileSummary(r.get(kindCNIAdd, "", cfgFerry), 50)
	addBridge := percentileSummary(r.get(kindCNIAdd, "", cfgBridge), 50)
	cni := summary{}
	if addFerry.N > 0 && addBridge.N > 0 {
		cni = summary{N: 1, Median: addFerry.Median / addBridge.Median}
		cni.Min, cni.Max = cni.Median, cni.Median
	}
	out = append(out, goal{
		id:       goalCNIAdd,
		name:     "CNI ADD p50 no slower than the bridge plugin",
		measured: formatRatio(cni),
		met:      check(cni.Median <= maxCNIAddVsBridge, cni),
	})

	prog := r.ratio(kindProgNs, pathCrossNode, cfgRoutesMany, pathCrossNode, cfgRoutesFew)
	flatTput := r.ratio(kindThroughput, pathCrossNode, cfgRoutesMany, pathCrossNode,
		cfgRoutesFew)
	flatLat := r.ratio(kindTCPP50, pathCrossNode, cfgRoutesMany, pathCrossNode, cfgRoutesFew)
	out = append(out, goal{
		id: goalFlat,
		name: fmt.Sprintf("per-packet cost flat from 2 to 5,002 node ranges (within %.0f%%: "+
			"program time, cross-node throughput, TCP p50)", flatTolerance*100),
		measured: "program time " + formatRatio(prog) + ", throughput " + formatRatio(flatTput) +
			", TCP p50 " + formatRatio(flatLat),
		met: check(prog.Median <= 1+flatTolerance && flatTput.Median >= 1-flatTolerance &&
			flatLat.Median <= 1+flatTolerance, prog, flatTput, flatLat),
	})
	return out
}

// percentileSummary returns the p-th percentile of values as a summary of one value.
func percentileSummary(values []float64, p float64) summary {
	v := valid(values)
	if len(v) == 0 {
		return summary{}
	}
	x := percentile(v, p)
	return summary{N: 1, Median: x, Min: x, Max: x}
}

// comparisonTable returns a table of one kind on the traffic paths: baseline, ferry, the
// ceiling and the ratios.
func comparisonTable(r *results, kind string, paths []string) table {
	t := table{header: []string{"path", "baseline", "ferry", "ceiling", "ferry / baseline",
		"ferry / ceiling", "baseline / ceiling"}}
	for _, path := range paths {
		t.addRow(path,
			formatSummary(r.summary(kind, path, cfgBaseline)),
			formatSummary(r.summary(kind, path, cfgFerry)),
			formatSummary(r.summary(kind, pathCeiling, cfgCeiling)),
			formatRatio(r.ratio(kind, path, cfgFerry, path, cfgBaseline)),
			formatRatio(r.ratio(kind, path, cfgFerry, pathCeiling, cfgCeiling)),
			formatRatio(r.ratio(kind, path, cfgBaseline, pathCeiling, cfgCeiling)))
	}
	return t
}

// latencyTable returns the request/response table of one protocol: p50 and p99 per path.
func latencyTable(r *results, p50, p99 string) table {
	t := table{header: []string{"path", "percentile", "baseline, µs", "ferry, µs",
		"ceiling, µs", "ferry / baseline", "ferry / ceiling"}}
	for _, path := range trafficPaths {
		for _, k := range []struct{ name, kind string }{{"p50", p50}, {"p99", p99}} {
			t.addRow(path, k.name,
				formatSummary(r.summary(k.kind, path, cfgBaseline)),
				formatSummary(r.summary(k.kind, path, cfgFerry)),
				formatSummary(r.summary(k.kind, pathCeiling, cfgCeiling)),
				formatRatio(r.ratio(k.kind, path, cfgFerry, path, cfgBaseline)),
				formatRatio(r.ratio(k.kind, path, cfgFerry, pathCeiling, cfgCeiling)))
		}
	}
	return t
}

// cniTable returns the CNI ADD and DEL table: percentiles over every pod.
func cniTable(r *results) table {
	t := table{header: []string{"operation", "bridge p50", "bridge p99", "bridge min–max",
		"ferry p50", "ferry p99", "ferry min–max", "ferry / bridge, p50", "ferry / bridge, p99"}}
	for _, op := range []struct{ name, kind string }{{"ADD", kindCNIAdd}, {"DEL", kindCNIDel}} {
		bridge := valid(r.get(op.kind, "", cfgBridge))
		ferry := valid(r.get(op.kind, "", cfgFerry))
		bs, fs := summarize(bridge), summarize(ferry)
		ratio := func(p float64) string {
			if len(bridge) == 0 || len(ferry) == 0 {
				return "n/a"
			}
			return formatRatio(summary{N: 1, Median: percentile(ferry, p) / percentile(bridge, p)})
		}
		t.addRow(op.name+" (ms)",
			formatValue(percentile(bridge, 50)), formatValue(percentile(bridge, 99)),
			formatValue(bs.Min)+"–"+formatValue(bs.Max),
			formatValue(percentile(ferry, 50)), formatValue(percentile(ferry, 99)),
			formatValue(fs.Min)+"–"+formatValue(fs.Max),
			ratio(50), ratio(99))
	}
	return t
}

// scaleRow is one row of a scale table: a kind measured in two configurations.
type scaleRow struct {
	label, kind, path string
	// lowerIsBetter is informational: the ratio column is always second / first.
}

// scaleTable returns a table that compares two configurations of ferry row by row.
func scaleTable(r *results, first, second string, rows []scaleRow) table {
	t := table{header: []string{"measurement", first, second, "ratio, second / first"}}
	for _, row := range rows {
		t.addRow(row.label,
			formatSummary(r.summary(row.kind, row.path, first)),
			formatSummary(r.summary(row.kind, row.path, second)),
			formatRatio(r.ratio(row.kind, row.path, second, row.path, first)))
	}
	return t
}

// sampleTable returns a table of kinds measured once per sample in each configuration.
func sampleTable(r *results, configs []string, kinds []string) table {
	t := table{header: append([]string{"measurement"}, configs...)}
	for _, kind := range kinds {
		row := []string{kind}
		for _, cfg := range configs {
			row = append(row, formatSummary(r.summary(kind, "", cfg)))
		}
		t.addRow(row...)
	}
	return t
}

func section(b *strings.Builder, title string, paragraphs ...string) {
	fmt.Fprintf(b, "\n## %s\n\n", title)
	for _, p := range paragraphs {
		b.WriteString(p + "\n\n")
	}
}
