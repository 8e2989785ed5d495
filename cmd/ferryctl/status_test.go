package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestStatusOutput(t *testing.T) {
	f := newFixture(t, true)
	rows := fields(f.ferryctl(t, "--metrics-address", "", "status"))
	want := [][]string{
		{"BPFFS DIR", f.node.BPFFSDir},
		{"NODE IP", "10.0.1.20"},
		{"POD CIDR", "10.200.0.0/24"},
		{"UPLINK", "eth0 (ifindex " + strconv.Itoa(f.node.UplinkIndex) + ")"},
		{"ATTACH MODE", "tcx"},
		{"UPLINK INGRESS", "not attached, 0 other programs"},
		{"UPLINK EGRESS", "not attached, 0 other programs"},
		{"POD PROGRAMS", "0 of 2 attached (tcx), missing on 10.200.0.5 10.200.0.9"},
		{"MASQUERADE", "enabled, ports 32768-65535"},
		{"NODE ROUTES", "2 of 16384 (0.0%)"},
		{"MASQUERADE EXCLUSIONS", "1 of 20480 (0.0%)"},
		{"ENDPOINTS", "2 of 65536 (0.0%)"},
		{"NAT ENTRIES", "2 of 4096 (0.0%)"},
		{"PACKETS", "1 forwarded or passed, 0 dropped"},
		{"NAT PORTS", "0 retries, 0 failures"},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("status table =\n%q\nwant\n%q", rows, want)
	}

	got := decodeJSON[status](t, f.ferryctl(t, "--metrics-address", "", "-o", "json", "status"))
	if got.NodeRoutes != 2 || got.Endpoints != 2 || got.NATEntries != 2 ||
		got.NATCapacity != 4096 || got.MasqueradeExclusions != 1 {
		t.Errorf("status JSON counts = %+v, want 2 routes, 2 endpoints, 2 of 4096 NAT entries "+
			"and 1 exclusion", got)
	}
	if len(got.Hooks) != 2 || got.Hooks[0].Hook != "uplink_ingress" || got.Hooks[0].Attached {
		t.Errorf("status JSON hooks = %+v, want two unattached uplink hooks", got.Hooks)
	}
	if !reflect.DeepEqual(got.PodsMissing, []string{"10.200.0.5", "10.200.0.9"}) {
		t.Errorf("status JSON pods missing = %v, want both endpoints", got.PodsMissing)
	}
	if got.Agent != nil {
		t.Errorf("status JSON agent = %+v, want null with --metrics-address empty", got.Agent)
	}
}

func TestStatusUnreachableAgent(t *testing.T) {
	f := newFixture(t, true)
	// Nothing listens in the fixture's namespace.
	out := f.ferryctl(t, "status")
	if !strings.Contains(out, "no metrics at 127.0.0.1:9402") {
		t.Errorf("status does not report the unreachable metrics listener:\n%s", out)
	}
}

func TestReadAgent(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/metrics":
			fmt.Fprint(w, "# HELP ferry_nodes Nodes.\n# TYPE ferry_nodes gauge\n"+
				"ferry_nodes{state=\"routed\"} 12\nferry_nodes{state=\"skipped\"} 1\n"+
				"ferry_config_reloads_total{result=\"success\"} 3\n"+
				"ferry_config_reloads_total{result=\"failure\"} 2\n"+
				"ferry_build_info{version=\"v1.2.3\"} 1\n")
		case "/readyz":
			http.Error(w, "not ready: starting", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	got := readAgent(addr)
	want := &agentStatus{Address: addr, Ready: false, NotReadyReason: "starting",
		Version: "v1.2.3", ReloadsOK: 3, ReloadsFailed: 2, NodesRouted: 12, NodesSkipped: 1}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("readAgent = %+v, want %+v", got, want)
	}
}

func TestReadAgentUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := strings.TrimPrefix(srv.URL, "http://")
	srv.Close()
	if got := readAgent(addr); got != nil {
		t.Errorf("readAgent of a closed listener = %+v, want nil", got)
	}
}
