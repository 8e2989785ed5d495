package main

import (
	"fmt"
	"strings"
)

// renderPage returns docs/benchmarks.md for the results of a full run.
func renderPage(r *results, p page) string {
	var b strings.Builder
	b.WriteString("# ferry benchmarks\n\n")
	b.WriteString("`make bench` writes this page (`go run ./test/bench -out " +
		"docs/benchmarks.md`); the next run replaces it, so edit `test/bench` rather " +
		"than the page. `make bench-quick` runs a reduced set for regressions.\n")

	writeMachine(&b, p)
	writeMethod(&b, p)

	section(&b, "Targets",
		"Ratios are ferry's figure over the baseline's (or the ceiling's), as the median "+
			"of the per-round ratios with their range.")
	gt := table{header: []string{"target", "measured", "result"}}
	for _, g := range goals(r) {
		gt.addRow(g.name, g.measured, verdict(g))
	}
	b.WriteString(gt.markdown())

	section(&b, "TCP throughput",
		"iperf3, one TCP stream from pod-a1 on worker-0, Gbit/s received. The ceiling "+
			"is the same test over the ceiling's veth pair.")
	t := comparisonTable(r, kindThroughput, trafficPaths)
	b.WriteString(t.markdown())

	section(&b, "Request/response latency",
		"One 64-byte message at a time, sent by the Go client in test/bench and echoed by "+
			"its server; each round records the p50 and p99 of about a second of round "+
			"trips after 200 unmeasured ones. Client and server run on the same CPU "+
			"(taskset), so that a round trip switches between them there instead of "+
			"waking the other CPU from idle, which costs this VM tens of microseconds at "+
			"random.")
	b.WriteString("TCP:\n\n")
	t = latencyTable(r, kindTCPP50, kindTCPP99)
	b.WriteString(t.markdown())
	b.WriteString("\nUDP:\n\n")
	t = latencyTable(r, kindUDPP50, kindUDPP99)
	b.WriteString(t.markdown())

	section(&b, "New TCP connections through the masquerade",
		"Two client workers in pod-a1 connect to 203.0.113.10, send one byte, wait for "+
			"its echo and close with a reset, for "+p.d.connections.String()+" per round. "+
			"The ceiling column is the same client over the veth pair, without NAT.")
	t = comparisonTable(r, kindConnRate, []string{pathMasquerade})
	b.WriteString(t.markdown())
	b.WriteString("\nEntries in worker-0's netfilter connection table right after the run " +
		"(a connection closed by a reset stays there 10 s). The nodes of both labs have " +
		"iptables NAT rules for the Service, so netfilter tracks the connections of ferry's " +
		"pods too.\n\n")
	ct := table{header: []string{"", "baseline", "ferry"}}
	ct.addRow("conntrack entries", formatSummary(r.summary(kindConntrack, pathMasquerade,
		cfgBaseline)), formatSummary(r.summary(kindConntrack, pathMasquerade, cfgFerry)))
	b.WriteString(ct.markdown())

	section(&b, "CNI ADD and DEL",
		fmt.Sprintf("%d pods on worker-2 of each lab, added one by one in turns (bridge, "+
			"ferry, ferry, bridge, ...) through libcni as the lab does, then deleted in the "+
			"same turns. Only the CNI call is timed, not the creation of the pod's "+
			"namespace. Both plugins delegate to host-local; the bridge plugin runs without "+
			"the loopback plugin of the baseline's list, so that the two lists differ only "+
			"in the main plugin. Percentiles and range over all pods.", cniPods))
	t = cniTable(r)
	b.WriteString(t.markdown())
	fmt.Fprintf(&b, "\nTwo parts of an ADD, timed alone. The first is the one step of "+
		"ferry's ADD that the bridge plugin lacks: attaching the pinned from_pod program to "+
		"a new veth in worker-2 of the ferry lab with the plugin's own call, as a cls_bpf "+
		"filter and with a tcx link (%d times each, in turns). The second is each plugin's "+
		"process start and exit, as a CNI VERSION call (%d times each, in turns). A tcx "+
		"link waits for an RCU grace period, which is why pods get cls_bpf filters unless "+
		"podAttachMode is tcx.\n\n", podAttaches, pluginStarts)
	at := table{header: []string{"step", "plugin", "p50", "p99", "min–max"}}
	for _, step := range []struct{ kind, cfg string }{
		{kindAttachClsact, cfgFerry}, {kindAttachTCX, cfgFerry},
		{kindPluginStart, cfgBridge}, {kindPluginStart, cfgFerry},
	} {
		v := valid(r.get(step.kind, "", step.cfg))
		s := summarize(v)
		at.addRow(step.kind, step.cfg, formatValue(percentile(v, 50)),
			formatValue(percentile(v, 99)), formatValue(s.Min)+"–"+formatValue(s.Max))
	}
	b.WriteString(at.markdown())

	writeScale(&b, r)
	writeFerryd(&b, r)
	writeEvidence(&b, p.evidence)
	writeFindings(&b, r, p)

	if len(r.notes) > 0 {
		section(&b, "Problems during this run")
		for _, n := range r.notes {
			b.WriteString("- " + n + "\n")
		}
	}
	return b.String()
}

func writeMachine(b *strings.Builder, p page) {
	m := p.machine
	section(b, "Machine")
	t := table{header: []string{"", ""}}
	t.addRow("date", m.date)
	t.addRow("CPU", m.cpu)
	t.addRow("cores", fmt.Sprint(m.cores))
	t.addRow("kernel", m.kernel)
	t.addRow("Go", m.goVersion)
	t.addRow("iperf3", m.iperf)
	t.addRow("commit", m.commit)
	t.addRow("load average (1, 5, 15 min) at start", m.loadStart)
	t.addRow("load average (1, 5, 15 min) at end", m.loadEnd)
	t.addRow("duration of the run", p.elapsed)
	b.WriteString(t.markdown())
}

func writeMethod(b *strings.Builder, p page) {
	section(b, "Method",
		"One run builds two labs of test/lab at the same time, each with the nodes "+
			"worker-0 and worker-1 on one subnet and worker-2 on another, and the cluster "+
			"CIDR 10.192.0.0/10:",
		"- **baseline**: the hand-wired setup, the bridge plugin with host-local, a cloud "+
			"route per node pod range on the vpc router and an iptables MASQUERADE rule on "+
			"each node;\n"+
			"- **ferry**: ferryd on every node with its static node list and its default "+
			"NAT table size (262,144 flows), pods networked by the ferry plugin;\n"+
			"- **ceiling**: two namespaces joined by a single veth pair, with no forwarding: "+
			"the cost of the client, the server and one veth hop, to compare the pod paths "+
			"with.",
		"Each lab has pod-a1 and pod-a2 on worker-0 and pod-b1 on worker-1. pod-a1 is the "+
			"client of every path: to pod-a2 (same node), to pod-b1 (cross node) and to "+
			"203.0.113.10 in the lab's internet namespace (masquerade).",
		fmt.Sprintf("The run has %d rounds. In each round every case runs on the baseline "+
			"and on ferry back to back, the first of the two alternating between rounds, "+
			"followed by the ceiling, so that both see the same load. Tables show the "+
			"median over the rounds with the range (min–max) in brackets. Ratios are the "+
			"median of the per-round ratios, so that drift between rounds cancels. "+
			"The machine has 2 cores shared with other work, so single runs are noisy; "+
			"the ranges show how much.", p.rounds),
		fmt.Sprintf("Each throughput run measures %d s after %d s of slow start; each "+
			"request/response run about %v.", p.d.iperf, p.d.iperfOmit, p.d.rr))
}

func writeScale(b *strings.Builder, r *results) {
	section(b, "Dataplane scale: node routes",
		"In every round, ferry's cross-node path is measured with the lab's two remote "+
			"node ranges in each node's node_routes map, and with 5,000 extra /24 ranges "+
			"that point at unused node IPs, written straight into the maps of all three "+
			"nodes with SyncNodeRoutes (ferryd writes them only at start and on SIGHUP). "+
			"The two states are measured back to back, in alternating order. The UDP "+
			"latency and the program time come from the same runs, with the kernel's BPF "+
			"statistics on (kernel.bpf_stats_enabled), which adds two clock reads to "+
			"every program run; those UDP figures are therefore a little higher than in "+
			"the latency table. Program time is the mean run time of from_pod on "+
			"worker-0 and worker-1, which looks up node_routes for every packet.")
	t := scaleTable(r, cfgRoutesFew, cfgRoutesMany, []scaleRow{
		{"cross-node TCP throughput, Gbit/s", kindThroughput, pathCrossNode},
		{"cross-node TCP request/response p50, µs", kindTCPP50, pathCrossNode},
		{"cross-node TCP request/response p99, µs", kindTCPP99, pathCrossNode},
		{"cross-node UDP request/response p50, µs (statistics on)", kindUDPP50, pathCrossNode},
		{"from_pod time per packet, ns", kindProgNs, pathCrossNode},
		{"node_routes map memory (fdinfo memlock), KiB", kindRoutesMem, pathCrossNode},
	})
	b.WriteString(t.markdown())
	b.WriteString("\n")
	lt := table{header: []string{"map update on worker-0", "ms"}}
	lt.addRow("write 5,000 extra ranges (SyncNodeRoutes to 5,002)",
		formatSummary(r.summary(kindRoutesLoad, pathCrossNode, cfgFerry)))
	lt.addRow("remove them again (SyncNodeRoutes to 2)",
		formatSummary(r.summary(kindRoutesUnload, pathCrossNode, cfgFerry)))
	b.WriteString(lt.markdown())

	section(b, "Dataplane scale: NAT table",
		"In every round, ferry's masquerade path is measured with worker-0's NAT table as "+
			"the traffic left it, and with 100,000 extra entries (50,000 TCP flows to "+
			"unused addresses, both directions) written with one batch update through "+
			"pkg/datapath. The table is preallocated, so its memory does not depend on "+
			"the entries. The program time is the mean run time of uplink_egress and "+
			"uplink_ingress on worker-0, with BPF statistics on as above. The expiry pass "+
			"is the code ferryd runs every 10 seconds (Maps.ExpireNAT), timed in the bench "+
			"process.")
	t = scaleTable(r, cfgNATEmpty, cfgNATFull, []scaleRow{
		{"entries in the table when measured", kindNATEntries, pathMasquerade},
		{"nat_table map memory (fdinfo memlock), MiB", kindNATMem, pathMasquerade},
		{"masquerade TCP throughput, Gbit/s", kindThroughput, pathMasquerade},
		{"masquerade TCP request/response p50, µs", kindTCPP50, pathMasquerade},
		{"masquerade TCP request/response p99, µs", kindTCPP99, pathMasquerade},
		{"masquerade UDP request/response p50, µs (statistics on)", kindUDPP50, pathMasquerade},
		{"uplink program time per packet, ns", kindProgNs, pathMasquerade},
		{"new connections per second", kindConnRate, pathMasquerade},
		{"one NAT expiry pass, ms", kindNATExpiry, pathMasquerade},
	})
	b.WriteString(t.markdown())
	b.WriteString("\n")
	lt = table{header: []string{"map update on worker-0", "ms"}}
	lt.addRow("write 100,000 entries (one batch update)",
		formatSummary(r.summary(kindNATFill, pathMasquerade, cfgFerry)))
	b.WriteString(lt.markdown())
}

func writeFerryd(b *strings.Builder, r *results) {
	section(b, "ferryd memory",
		fmt.Sprintf("ferryd on worker-2 of the ferry lab restarts %d times with each node "+
			"list, in turns. Three lists are static: the lab's three nodes, and 1,000 or "+
			"5,000 extra nodes (the /24 ranges of the scale case). The fourth has the same "+
			"5,003 nodes as Node objects from the Kubernetes API. For it, ferryd reads a "+
			"kubeconfig, and its client-go informer lists and watches the nodes over HTTP "+
			"from a stand-in API server in worker-2's namespace (nodesourcetest.APIServer, "+
			"JSON). Those Node objects carry the labels, conditions and 20 cached images of "+
			"a real node. The start time runs until ferryd has written its CNI "+
			"configuration, which it does after loading every node into its maps, polled "+
			"every 50 ms. Memory is VmRSS from /proc/<pid>/status after %v idle.",
			ferrydRestarts, ferrydIdle))
	var configs []string
	for _, l := range ferrydNodeLists {
		configs = append(configs, l.cfg)
	}
	t := sampleTable(r, configs, []string{kindFerrydReady, kindFerrydRSS})
	b.WriteString(t.markdown())
	if peak := r.summary(kindFerrydPeak, "", cfgFerry); peak.N > 0 {
		fmt.Fprintf(b, "\nPeak resident memory (VmHWM) of worker-0's ferryd after the rounds, "+
			"which include its NAT expiry passes over the extra entries: %s MiB.\n",
			formatValue(peak.Median))
	}
}

func writeEvidence(b *strings.Builder, evidence []pathEvidence) {
	if len(evidence) == 0 {
		return
	}
	section(b, "What ferry's programs do per request",
		"One UDP request/response run per path on ferry after the rounds, with BPF "+
			"statistics on. Per request and its echo: how often ferry's programs ran on "+
			"all three nodes, their time, and the counters they incremented "+
			"(`ferryctl stats` names). A packet that a program hands to the kernel "+
			"stack counts as to-stack.")
	t := table{header: []string{"path", "requests", "program runs", "program time, ns",
		"counters per request"}}
	for _, ev := range evidence {
		t.addRow(ev.row()...)
	}
	b.WriteString(t.markdown())
	b.WriteString("\nCounters during one throughput run per path, with the mean size of the " +
		"packets they counted. Packets that the kernel segments only later (GSO) are " +
		"counted once, at their full size.\n\n")
	t = table{header: []string{"path", "counters during the throughput run"}}
	for _, ev := range evidence {
		t.addRow(ev.path, strings.Join(ev.bulk, "; "))
	}
	b.WriteString(t.markdown())
}

// renderQuick returns the summary of a quick run.
func renderQuick(r *results) string {
	var b strings.Builder
	t := table{header: []string{"cross node", "baseline", "ferry", "ferry / baseline"}}
	for _, k := range []string{kindThroughput, kindTCPP50, kindTCPP99, kindUDPP50, kindUDPP99} {
		t.addRow(k,
			formatSummary(r.summary(k, pathCrossNode, cfgBaseline)),
			formatSummary(r.summary(k, pathCrossNode, cfgFerry)),
			formatRatio(r.ratio(k, pathCrossNode, cfgFerry, pathCrossNode, cfgBaseline)))
	}
	b.WriteString(t.markdown())
	for _, n := range r.notes {
		b.WriteString("- " + n + "\n")
	}
	return b.String()
}
