package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ferrynet/ferry/pkg/datapath"
)

// defaultMetricsAddress is ferryd's default metricsAddress.
const defaultMetricsAddress = "127.0.0.1:9402"

// metricsAddress is the address of ferryd's metrics listener that status reads.
// Empty skips it.
var metricsAddress = defaultMetricsAddress

// metricsTimeout bounds each request to ferryd's metrics listener.
const metricsTimeout = 2 * time.Second

// status is the JSON of the status command.
type status struct {
	BPFFSDir             string `json:"bpffsDir"`
	NodeIP               string `json:"nodeIP"`
	PodCIDR              string `json:"podCIDR"`
	UplinkIfIndex        int    `json:"uplinkIfindex"`
	UplinkIfName         string `json:"uplinkIfname"`
	AttachMode           string `json:"attachMode"`
	PodAttachMode        string `json:"podAttachMode"`
	Masquerade           bool   `json:"masquerade"`
	NATPortMin           uint16 `json:"natPortMin"`
	NATPortMax           uint16 `json:"natPortMax"`
	NodeRoutes           int    `json:"nodeRoutes"`
	MasqueradeExclusions int    `json:"masqueradeExclusions"`
	Endpoints            int    `json:"endpoints"`
	NATEntries           int    `json:"natEntries"`
	NATCapacity          uint32 `json:"natCapacity"`

	Hooks []hookStatus `json:"hooks"`
	// PodsAttached counts the endpoints whose veth has ferry's program, and
	// PodsAttachedTCX those of them with a tcx link.
	PodsAttached    int `json:"podsAttached"`
	PodsAttachedTCX int `json:"podsAttachedTcx"`
	// PodsMissing lists the endpoints whose veth lacks it.
	PodsMissing []string   `json:"podsMissing"`
	Maps        []mapUsage `json:"maps"`
	// ForwardedPackets and DroppedPackets sum the counters of every reason
	// that is not a drop, and of every drop reason.
	ForwardedPackets uint64 `json:"forwardedPackets"`
	DroppedPackets   uint64 `json:"droppedPackets"`
	NATPortRetries   uint64 `json:"natPortRetries"`
	NATPortFailures  uint64 `json:"natPortFailures"`
	// Agent is ferryd's own state, read from its metrics listener; null
	// when it was not reachable.
	Agent *agentStatus `json:"agent"`
}

type hookStatus struct {
	Hook     string `json:"hook"`
	Attached bool   `json:"attached"`
	Programs int    `json:"programs"`
	Position int    `json:"position"`
}

type mapUsage struct {
	Map      string `json:"map"`
	Entries  int    `json:"entries"`
	Capacity int    `json:"capacity"`
}

// agentStatus is ferryd's state as its metrics listener reports it.
type agentStatus struct {
	Address        string `json:"address"`
	Ready          bool   `json:"ready"`
	NotReadyReason string `json:"notReadyReason,omitempty"`
	Version        string `json:"version"`
	ReloadsOK      int    `json:"reloadsSucceeded"`
	ReloadsFailed  int    `json:"reloadsFailed"`
	NodesRouted    int    `json:"nodesRouted"`
	NodesSkipped   int    `json:"nodesSkipped"`
}

func statusView(m *datapath.Maps, dir string) (view, error) {
	s, err := m.Settings()
	if err != nil {
		return nil, err
	}
	st := status{
		BPFFSDir:      dir,
		NodeIP:        s.NodeIP.String(),
		PodCIDR:       s.PodCIDR.String(),
		UplinkIfIndex: s.UplinkIfIndex,
		UplinkIfName:  ifName(s.UplinkIfIndex),
		AttachMode:    string(s.UplinkAttachMode()),
		PodAttachMode: string(s.PodAttachMode()),
		Masquerade:    s.Masquerade,
		NATPortMin:    s.NATPortMin,
		NATPortMax:    s.NATPortMax,
		NATCapacity:   m.NATCapacity(),
		PodsMissing:   []string{},
	}
	if err := st.readMaps(m, dir); err != nil {
		return nil, err
	}
	if metricsAddress != "" {
		st.Agent = readAgent(metricsAddress)
	}
	return report{rows: st.rows(), data: st}, nil
}

// readMaps fills in what the pinned maps and the hooks show.
func (st *status) readMaps(m *datapath.Maps, dir string) error {
	usage, err := m.Usage()
	if err != nil {
		return err
	}
	for _, u := range usage {
		st.Maps = append(st.Maps, mapUsage{Map: u.Name, Entries: u.Entries, Capacity: u.Capacity})
		switch u.Name {
		case "node_routes":
			st.NodeRoutes = u.Entries
		case "masq_exclude":
			st.MasqueradeExclusions = u.Entries
		case "endpoints":
			st.Endpoints = u.Entries
		case "nat_table":
			st.NATEntries = u.Entries
		}
	}

	hooks, pods, err := m.Hooks(dir)
	if err != nil {
		return err
	}
	for _, h := range hooks {
		st.Hooks = append(st.Hooks, hookStatus{Hook: h.Hook, Attached: h.Attached,
			Programs: h.Programs, Position: h.Position})
	}
	st.PodsAttached = pods.Attached
	st.PodsAttachedTCX = pods.AttachedTCX
	for _, ip := range pods.Missing {
		st.PodsMissing = append(st.PodsMissing, ip.String())
	}

	counters, err := m.Counters()
	if err != nil {
		return err
	}
	for _, c := range counters {
		switch {
		case c.Reason.IsDrop():
			st.DroppedPackets += c.Packets
		default:
			st.ForwardedPackets += c.Packets
		}
		switch c.Reason.String() {
		case "nat-port-retry":
			st.NATPortRetries = c.Packets
		case "drop-nat-no-port":
			st.NATPortFailures = c.Packets
		}
	}
	return nil
}

func (st *status) rows() [][]string {
	masq := "disabled"
	if st.Masquerade {
		masq = fmt.Sprintf("enabled, ports %d-%d", st.NATPortMin, st.NATPortMax)
	}
	rows := [][]string{
		{"BPFFS DIR", st.BPFFSDir},
		{"NODE IP", st.NodeIP},
		{"POD CIDR", st.PodCIDR},
		{"UPLINK", fmt.Sprintf("%s (ifindex %d)", orDash(st.UplinkIfName), st.UplinkIfIndex)},
		{"ATTACH MODE", st.AttachMode},
	}
	for _, h := range st.Hooks {
		rows = append(rows, []string{strings.ToUpper(strings.ReplaceAll(h.Hook, "_", " ")),
			describeHook(h)})
	}
	pods := fmt.Sprintf("%d of %d attached (%s)", st.PodsAttached, st.Endpoints,
		st.PodAttachMode)
	if tcx := st.PodsAttachedTCX; st.PodAttachMode == string(datapath.AttachClsact) && tcx > 0 {
		pods = fmt.Sprintf("%d of %d attached (clsact, %d kept on tcx)", st.PodsAttached,
			st.Endpoints, tcx)
	}
	if len(st.PodsMissing) > 0 {
		pods += ", missing on " + strings.Join(st.PodsMissing, " ")
	}
	rows = append(rows,
		[]string{"POD PROGRAMS", pods},
		[]string{"MASQUERADE", masq},
	)
	for _, u := range st.Maps {
		label := map[string]string{"node_routes": "NODE ROUTES",
			"masq_exclude": "MASQUERADE EXCLUSIONS", "endpoints": "ENDPOINTS",
			"nat_table": "NAT ENTRIES"}[u.Map]
		rows = append(rows, []string{label, fill(u.Entries, u.Capacity)})
	}
	rows = append(rows,
		[]string{"PACKETS", fmt.Sprintf("%d forwarded or passed, %d dropped",
			st.ForwardedPackets, st.DroppedPackets)},
		[]string{"NAT PORTS", fmt.Sprintf("%d retries, %d failures", st.NATPortRetries,
			st.NATPortFailures)},
	)
	return append(rows, st.agentRows()...)
}

func (st *status) agentRows() [][]string {
	if metricsAddress == "" {
		return nil
	}
	a := st.Agent
	if a == nil {
		return [][]string{{"FERRYD", "no metrics at " + metricsAddress +
			": not running, or set --metrics-address"}}
	}
	ready := "ready"
	if !a.Ready {
		ready = "not ready: " + a.NotReadyReason
	}
	return [][]string{
		{"FERRYD", fmt.Sprintf("%s, version %s", ready, orDash(a.Version))},
		{"CONFIG RELOADS", fmt.Sprintf("%d succeeded, %d failed", a.ReloadsOK, a.ReloadsFailed)},
		{"NODES", fmt.Sprintf("%d routed, %d skipped", a.NodesRouted, a.NodesSkipped)},
	}
}

func describeHook(h hookStatus) string {
	if !h.Attached {
		return fmt.Sprintf("not attached, %d other programs", h.Programs)
	}
	place := "last"
	if h.Position != h.Programs-1 {
		place = fmt.Sprintf("at %d", h.Position+1)
	}
	return fmt.Sprintf("attached, %s of %d programs", place, h.Programs)
}

func fill(entries, capacity int) string {
	if capacity == 0 {
		return strconv.Itoa(entries)
	}
	return fmt.Sprintf("%d of %d (%.1f%%)", entries, capacity,
		100*float64(entries)/float64(capacity))
}

// readAgent reads ferryd's readiness and metrics from its listener at addr,
// or returns nil when it does not respond.
func readAgent(addr string) *agentStatus {
	client := &http.Client{Timeout: metricsTimeout}

	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil
	}
	series := parseMetrics(resp.Body)
	resp.Body.Close()
	a := &agentStatus{
		Address:       addr,
		ReloadsOK:     int(series[`ferry_config_reloads_total{result="success"}`]),
		ReloadsFailed: int(series[`ferry_config_reloads_total{result="failure"}`]),
		NodesRouted:   int(series[`ferry_nodes{state="routed"}`]),
		NodesSkipped:  int(series[`ferry_nodes{state="skipped"}`]),
	}
	for name := range series {
		if v, ok := strings.CutPrefix(name, `ferry_build_info{version="`); ok {
			a.Version = strings.TrimSuffix(v, `"}`)
		}
	}

	resp, err = client.Get("http://" + addr + "/readyz")
	if err != nil {
		a.NotReadyReason = err.Error()
		return a
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	a.Ready = resp.StatusCode == http.StatusOK
	if !a.Ready {
		a.NotReadyReason = strings.TrimSpace(strings.TrimPrefix(string(body), "not ready: "))
	}
	return a
}

// parseMetrics reads the samples of a Prometheus text exposition, keyed by
// the series as written, such as name{label="value"}.
func parseMetrics(r io.Reader) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}
