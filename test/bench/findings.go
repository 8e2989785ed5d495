package main

import (
	"fmt"
	"math"
	"strings"
)

// writeFindings explains each target that ferry missed in this run, from the figures of
// the run alone, and notes what else the figures show.
func writeFindings(b *strings.Builder, r *results, p page) {
	missed := map[string]bool{}
	for _, g := range goals(r) {
		if g.met != nil && !*g.met {
			missed[g.id] = true
		}
	}

	var paras []string
	if missed[goalThroughputBaseline] || missed[goalThroughputCeiling] {
		paras = append(paras, throughputFinding(r, p))
	}
	if missed[goalLatency] {
		paras = append(paras, latencyFindings(r, p.evidence)...)
	}
	if missed[goalConnRate] {
		paras = append(paras, connRateFinding(r))
	}
	if missed[goalCNIAdd] {
		paras = append(paras, cniFinding(r))
	}
	if missed[goalFlat] {
		paras = append(paras, flatFinding(r))
	}
	paras = append(paras, natExpiryFinding(r))
	if f := ferrydFinding(r); f != "" {
		paras = append(paras, f)
	}

	section(b, "Where ferry falls short, and why")
	b.WriteString("Each paragraph below is generated from this run's figures; a target " +
		"that ferry met has none.\n\n")
	for _, para := range paras {
		b.WriteString(para + "\n\n")
	}
}

func throughputFinding(r *results, p page) string {
	tput := r.ratio(kindThroughput, pathCrossNode, cfgFerry, pathCrossNode, cfgBaseline)
	ceil := r.ratio(kindThroughput, pathCrossNode, cfgFerry, pathCeiling, cfgCeiling)
	head := fmt.Sprintf("**Cross-node throughput.** ferry reaches %s of the baseline's "+
		"cross-node throughput and %s of the ceiling's.", formatRatio(tput), formatRatio(ceil))
	var cross *pathEvidence
	for i := range p.evidence {
		if p.evidence[i].path == pathCrossNode {
			cross = &p.evidence[i]
		}
	}
	if cross == nil || cross.fibDrop.packets == 0 {
		return head + " " + throughputBound(r)
	}
	mean := float64(cross.fibDrop.bytes) / float64(cross.fibDrop.packets)
	return head + fmt.Sprintf(" In the evidence run, from_pod dropped %s packets of a "+
		"cross-node TCP stream as drop-fib-lookup, of %s bytes on average, while the "+
		"uplink's MTU is %d bytes: these are GSO packets, which the kernel segments only "+
		"when it transmits them. forward_remote (headers/forward.h) passes the packet's IP "+
		"total length to bpf_fib_lookup as tot_len, the helper fails with "+
		"BPF_FIB_LKUP_RET_FRAG_NEEDED when that length exceeds the MTU (linux/bpf.h), and "+
		"forward_remote drops on every result other than success and no neighbour. The "+
		"stream loses its large segments and crawls on retransmissions, while small "+
		"packets pass, as the latency tables show.",
		formatCount(cross.fibDrop.packets), formatValue(mean), p.uplinkMTU)
}

// throughputBound explains a missed throughput target from the ceiling: when ferry runs at
// about the ceiling's rate, the baseline's distance from the ceiling bounds the ratio.
func throughputBound(r *results) string {
	baseCeil := r.ratio(kindThroughput, pathCrossNode, cfgBaseline, pathCeiling, cfgCeiling)
	if baseCeil.N == 0 || baseCeil.Median <= 0 {
		return "The counters of the evidence run show no drop that explains it."
	}
	return fmt.Sprintf("The counters of the evidence run show no drop. The ceiling, one veth "+
		"pair with no forwarding, is the reference here: the baseline's stream runs at %s of "+
		"it, so a dataplane at the ceiling's rate would reach about %.2fx the baseline in "+
		"this lab.", formatRatio(baseCeil), 1/baseCeil.Median)
}

// latencyFindings compares each latency figure with the ceiling: the client and server
// alone cost the ceiling's latency, and only the rest depends on the dataplane.
func latencyFindings(r *results, evidence []pathEvidence) []string {
	t := table{header: []string{"protocol", "path", "percentile", "ceiling, µs",
		"baseline above ceiling, µs", "ferry above ceiling, µs", "0.75x baseline, µs",
		"target below the ceiling"}}
	unreachable := 0
	negativeP99 := false
	for _, proto := range []struct{ name, p50, p99 string }{
		{"TCP", kindTCPP50, kindTCPP99}, {"UDP", kindUDPP50, kindUDPP99},
	} {
		for _, path := range trafficPaths {
			for _, k := range []struct{ name, kind string }{{"p50", proto.p50},
				{"p99", proto.p99}} {
				c := r.summary(k.kind, pathCeiling, cfgCeiling).Median
				base := r.summary(k.kind, path, cfgBaseline).Median
				ferry := r.summary(k.kind, path, cfgFerry).Median
				goal := maxLatencyVsBaseline * base
				below := "no"
				if goal < c {
					below = "yes"
					unreachable++
				}
				if k.name == "p99" && (base < c || ferry < c) {
					negativeP99 = true
				}
				t.addRow(proto.name, path, k.name, formatValue(c), formatValue(base-c),
					formatValue(ferry-c), formatValue(goal), below)
			}
		}
	}
	paras := []string{fmt.Sprintf("**Request/response latency.** Each round trip includes "+
		"the Go client and server, their system calls and wake-ups, which the ceiling pays "+
		"too, over a single veth pair. Only the part above the ceiling is the cost of the "+
		"path through the nodes. Where 0.75x the baseline lies below the ceiling (%d of "+
		"the 12 figures in this run), ferry would have to beat a bare veth pair by that "+
		"margin. Medians:\n\n%s", unreachable, strings.TrimSuffix(t.markdown(), "\n"))}
	if negativeP99 {
		paras = append(paras, "A negative figure above the ceiling means that the median "+
			"of that setup was below the ceiling's in this run. The p99 of one-second runs "+
			"varies more between rounds than the paths differ, as the ranges in the latency "+
			"tables show, so the p99 rows compare poorly.")
	}
	sameNode := r.summary(kindTCPP50, pathSameNode, cfgFerry).Median -
		r.summary(kindTCPP50, pathCeiling, cfgCeiling).Median
	if sameNode <= 0 {
		paras = append(paras, "On the same node, ferry's TCP p50 is at or below the "+
			"ceiling's: bpf_redirect_peer moves each packet into the other pod's namespace "+
			"without going through the CPU's backlog queue (linux/bpf.h), so a single veth "+
			"pair is no strict bound for this path.")
	}

	for _, ev := range evidence {
		if ev.path != pathMasquerade {
			continue
		}
		toStack := ev.perRequest("worker-0: to-stack")
		if toStack < 0.99 {
			continue
		}
		paras = append(paras, fmt.Sprintf("On the masquerade path, from_pod hands every "+
			"request to the node's stack (to-stack %s per request on worker-0 in the "+
			"evidence run), which routes it and runs netfilter as in the baseline. The "+
			"program cannot tell a Service IP from an address outside the cluster, and "+
			"kube-proxy's DNAT rules in the stack must see the first; so every destination "+
			"outside the pod ranges goes there. ferry replaces only the MASQUERADE rule, by "+
			"its SNAT in uplink_egress, and returns the echo past the stack (rev-snat, then "+
			"forward-local). Its masquerade latency therefore stays close to the "+
			"baseline's.", formatValue(toStack)))
	}
	return paras
}

func connRateFinding(r *results) string {
	conn := r.ratio(kindConnRate, pathMasquerade, cfgFerry, pathMasquerade, cfgBaseline)
	text := fmt.Sprintf("**Connection rate.** ferry opens %s as many connections per "+
		"second through the masquerade as the baseline. Every new connection of both labs "+
		"passes the node's netfilter connection tracking, because the nodes have iptables "+
		"NAT rules for the Service (conntrack entries on worker-0 after the run: baseline "+
		"%s, ferry %s); ferry also creates two entries in its own NAT table in "+
		"uplink_egress.", formatRatio(conn),
		formatSummary(r.summary(kindConntrack, pathMasquerade, cfgBaseline)),
		formatSummary(r.summary(kindConntrack, pathMasquerade, cfgFerry)))
	if conn.N > 0 && conn.Min <= 1 && conn.Max >= 1 {
		text += " The per-round ratios lie on both sides of 1.0, so this run does not " +
			"separate the two setups."
	}
	return text
}

func cniFinding(r *results) string {
	bridge := valid(r.get(kindCNIAdd, "", cfgBridge))
	ferry := valid(r.get(kindCNIAdd, "", cfgFerry))
	gap := percentile(ferry, 50) - percentile(bridge, 50)
	text := fmt.Sprintf("**CNI ADD.** ferry's ADD takes %s ms at the median against %s ms "+
		"for the bridge plugin.", formatValue(percentile(ferry, 50)),
		formatValue(percentile(bridge, 50)))
	if gap > 0 {
		text += fmt.Sprintf(" ferry is %s ms slower.", formatValue(gap))
		startBridge := valid(r.get(kindPluginStart, "", cfgBridge))
		startFerry := valid(r.get(kindPluginStart, "", cfgFerry))
		if len(startBridge) > 0 && len(startFerry) > 0 {
			d := percentile(startFerry, 50) - percentile(startBridge, 50)
			text += fmt.Sprintf(" Starting the ferry binary takes %s ms more than starting "+
				"the bridge plugin (CNI VERSION calls, medians).", formatValue(d))
		}
	}
	if attach := valid(r.get(kindAttachClsact, "", cfgFerry)); len(attach) > 0 {
		text += fmt.Sprintf(" Its one step that the bridge plugin lacks, attaching "+
			"from_pod to the new veth as a cls_bpf filter, takes %s ms at the median.",
			formatValue(percentile(attach, 50)))
	}
	if tcx := valid(r.get(kindAttachTCX, "", cfgFerry)); len(tcx) > 0 {
		text += fmt.Sprintf(" With podAttachMode tcx that step takes %s ms instead, "+
			"because the kernel waits for an RCU grace period after it links the program "+
			"into the hook, and every ADD would take that much longer.",
			formatValue(percentile(tcx, 50)))
	}
	return text
}

func flatFinding(r *results) string {
	prog := r.ratio(kindProgNs, pathCrossNode, cfgRoutesMany, pathCrossNode, cfgRoutesFew)
	few := r.summary(kindProgNs, pathCrossNode, cfgRoutesFew)
	many := r.summary(kindProgNs, pathCrossNode, cfgRoutesMany)
	text := fmt.Sprintf("**Per-packet cost with 5,002 node ranges.** from_pod takes %s ns "+
		"per packet with 5,002 ranges and %s ns with 2 (medians of the rounds); the "+
		"per-round ratio is %s. The two states differ only in the content of node_routes, "+
		"which from_pod looks up for every packet.", formatValue(many.Median),
		formatValue(few.Median), formatRatio(prog))
	if prog.N > 0 && prog.Min <= 1 && prog.Max >= 1 {
		text += " The per-round ratios lie on both sides of 1.0, so part of the difference " +
			"is this machine's noise."
	} else if prog.N > 0 {
		text += fmt.Sprintf(" Every round shows the same direction, so the %s ns are the "+
			"cost of the lookup in the larger trie.", formatValue(many.Median-few.Median))
	}
	tput := r.ratio(kindThroughput, pathCrossNode, cfgRoutesMany, pathCrossNode, cfgRoutesFew)
	lat := r.ratio(kindTCPP50, pathCrossNode, cfgRoutesMany, pathCrossNode, cfgRoutesFew)
	text += fmt.Sprintf(" Cross-node throughput moves by %s and TCP p50 by %s between the "+
		"two states.", formatRatio(tput), formatRatio(lat))
	return text
}

func natExpiryFinding(r *results) string {
	entries := r.summary(kindNATEntries, pathMasquerade, cfgNATFull)
	pass := r.summary(kindNATExpiry, pathMasquerade, cfgNATFull)
	if pass.N == 0 || math.IsNaN(entries.Median) {
		return "**NAT expiry.** This run has no timing of the expiry pass."
	}
	return fmt.Sprintf("**NAT expiry.** One expiry pass over %s entries took %s ms; ferryd "+
		"runs one every 10 seconds, so a table of that size keeps about %.1f%% of a core "+
		"busy in ferryd, and the pass reads every entry through the map iterator, so its "+
		"time grows with the table.", formatValue(entries.Median),
		formatSummary(pass), 100*pass.Median/10000)
}

func ferrydFinding(r *results) string {
	if r.summary(kindFerrydRSS, "", cfgNodesExtra).N > 0 {
		return ""
	}
	msg, ok := r.failures[resultKey{kindFerrydReady, "", cfgNodesExtra}]
	if !ok {
		return ""
	}
	if i := strings.Index(msg, "error="); i >= 0 {
		msg = msg[i:]
	}
	return fmt.Sprintf("**ferryd with 5,003 nodes.** ferryd does not start with 5,003 "+
		"nodes in its static node list (%s). ferryd puts every node IP into masq_exclude, "+
		"whose size FERRY_MAX_EXCLUSIONS in headers/ferry.h sets.", msg)
}
