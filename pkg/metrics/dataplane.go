package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons of the counters map that the collector also exports under names
// of their own.
const (
	reasonPortRetry  = "nat-port-retry"
	reasonPortFailed = "drop-nat-no-port"
)

var (
	packetsDesc = prometheus.NewDesc(namespace+"_datapath_packets_total",
		"Packets that ferry's programs handled, by reason and hook; dropped is true for "+
			"drops.",
		[]string{"reason", "dropped", "hook"}, nil)
	bytesDesc = prometheus.NewDesc(namespace+"_datapath_bytes_total",
		"Bytes of the packets counted in ferry_datapath_packets_total.",
		[]string{"reason", "dropped", "hook"}, nil)
	portRetriesDesc = prometheus.NewDesc(namespace+"_nat_port_retries_total",
		"Ports tried for new masquerade mappings after the first one was taken.", nil, nil)
	portFailuresDesc = prometheus.NewDesc(namespace+"_nat_port_allocation_failures_total",
		"New masqueraded flows dropped because no free port was found.", nil, nil)
	natEntriesDesc = prometheus.NewDesc(namespace+"_nat_entries",
		"Entries of the NAT table, two per masqueraded flow.", nil, nil)
	natCapacityDesc = prometheus.NewDesc(namespace+"_nat_capacity_entries",
		"Capacity of the NAT table in entries.", nil, nil)
	mapEntriesDesc = prometheus.NewDesc(namespace+"_map_entries",
		"Entries of a BPF map.", []string{"map"}, nil)
	mapCapacityDesc = prometheus.NewDesc(namespace+"_map_capacity_entries",
		"Maximum number of entries of a BPF map.", []string{"map"}, nil)
	mapFillDesc = prometheus.NewDesc(namespace+"_map_fill_ratio",
		"Entries of a BPF map divided by its capacity.", []string{"map"}, nil)
	nodeRoutesDesc = prometheus.NewDesc(namespace+"_node_routes",
		"Remote pod ranges in the node routes map.", nil, nil)
	endpointsDesc = prometheus.NewDesc(namespace+"_endpoints",
		"Pods of this node in the endpoints map.", nil, nil)
	hookAttachedDesc = prometheus.NewDesc(namespace+"_hook_attached",
		"1 when ferry's program is attached to the uplink hook, 0 otherwise.",
		[]string{"hook", "mode"}, nil)
	hookProgramsDesc = prometheus.NewDesc(namespace+"_hook_programs",
		"BPF programs on the uplink hook, ferry's and those of other software.",
		[]string{"hook", "mode"}, nil)
	podHooksDesc = prometheus.NewDesc(namespace+"_pod_hooks",
		"Pods of this node whose veth has ferry's program (attached) or lacks it (missing).",
		[]string{"state"}, nil)
)

// dataplaneCollector reads the dataplane at every scrape.
type dataplaneCollector struct{ m *Metrics }

func (c *dataplaneCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{packetsDesc, bytesDesc, portRetriesDesc,
		portFailuresDesc, natEntriesDesc, natCapacityDesc, mapEntriesDesc, mapCapacityDesc,
		mapFillDesc, nodeRoutesDesc, endpointsDesc, hookAttachedDesc, hookProgramsDesc,
		podHooksDesc} {
		ch <- d
	}
}

func (c *dataplaneCollector) Collect(ch chan<- prometheus.Metric) {
	dp := c.m.dataplane()
	if dp == nil {
		return
	}
	collectCounters(ch, dp)
	collectUsage(ch, dp)
	collectHooks(ch, dp)
}

func collectCounters(ch chan<- prometheus.Metric, dp Dataplane) {
	counters, err := dp.CountersByHook()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(packetsDesc, err)
		return
	}
	var retries, failures uint64
	for _, ctr := range counters {
		name := ctr.Reason.String()
		dropped := strconv.FormatBool(ctr.Reason.IsDrop())
		hook := ctr.Hook.String()
		ch <- prometheus.MustNewConstMetric(packetsDesc, prometheus.CounterValue,
			float64(ctr.Packets), name, dropped, hook)
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue,
			float64(ctr.Bytes), name, dropped, hook)
		switch name {
		case reasonPortRetry:
			retries += ctr.Packets
		case reasonPortFailed:
			failures += ctr.Packets
		}
	}
	ch <- prometheus.MustNewConstMetric(portRetriesDesc, prometheus.CounterValue,
		float64(retries))
	ch <- prometheus.MustNewConstMetric(portFailuresDesc, prometheus.CounterValue,
		float64(failures))
}

func collectUsage(ch chan<- prometheus.Metric, dp Dataplane) {
	usage, err := dp.Usage()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(mapEntriesDesc, err)
		return
	}
	for _, u := range usage {
		entries, capacity := float64(u.Entries), float64(u.Capacity)
		ch <- prometheus.MustNewConstMetric(mapEntriesDesc, prometheus.GaugeValue, entries, u.Name)
		ch <- prometheus.MustNewConstMetric(mapCapacityDesc, prometheus.GaugeValue, capacity,
			u.Name)
		if capacity > 0 {
			ch <- prometheus.MustNewConstMetric(mapFillDesc, prometheus.GaugeValue,
				entries/capacity, u.Name)
		}
		switch u.Name {
		case "nat_table":
			ch <- prometheus.MustNewConstMetric(natEntriesDesc, prometheus.GaugeValue, entries)
			ch <- prometheus.MustNewConstMetric(natCapacityDesc, prometheus.GaugeValue, capacity)
		case "node_routes":
			ch <- prometheus.MustNewConstMetric(nodeRoutesDesc, prometheus.GaugeValue, entries)
		case "endpoints":
			ch <- prometheus.MustNewConstMetric(endpointsDesc, prometheus.GaugeValue, entries)
		}
	}
}

func collectHooks(ch chan<- prometheus.Metric, dp Dataplane) {
	hooks, pods, err := dp.Hooks()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(hookAttachedDesc, err)
		return
	}
	for _, h := range hooks {
		attached := 0.0
		if h.Attached {
			attached = 1
		}
		mode := string(h.Mode)
		ch <- prometheus.MustNewConstMetric(hookAttachedDesc, prometheus.GaugeValue, attached,
			h.Hook, mode)
		ch <- prometheus.MustNewConstMetric(hookProgramsDesc, prometheus.GaugeValue,
			float64(h.Programs), h.Hook, mode)
	}
	ch <- prometheus.MustNewConstMetric(podHooksDesc, prometheus.GaugeValue,
		float64(pods.Attached), "attached")
	ch <- prometheus.MustNewConstMetric(podHooksDesc, prometheus.GaugeValue,
		float64(len(pods.Missing)), "missing")
}
