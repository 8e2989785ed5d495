package cni_test

import (
	"strings"
	"testing"

	"github.com/ferrynet/ferry/pkg/cni"
)

func TestCheckReportsMismatch(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, n *testNode, pod *testPod)
		want   string // with %s for the host veth name
	}{
		{
			name: "host route deleted",
			damage: func(t *testing.T, n *testNode, pod *testPod) {
				n.run(t, "ip", "route", "del", firstPod.String()+"/32", "dev", pod.hostName())
			},
			want: "host route 10.200.0.2/32 dev %s scope link missing",
		},
		{
			name: "endpoint deleted",
			damage: func(t *testing.T, n *testNode, _ *testPod) {
				if err := n.maps(t).DeleteEndpoint(firstPod); err != nil {
					t.Fatal(err)
				}
			},
			want: "endpoint 10.200.0.2 missing from the endpoints map",
		},
		{
			name: "program detached",
			damage: func(t *testing.T, n *testNode, pod *testPod) {
				// Pods have cls_bpf filters by default; this deletes every filter of the
				// veth's ingress, ferry's included.
				n.run(t, "tc", "filter", "del", "dev", pod.hostName(), "ingress")
			},
			want: "pod program not attached to host veth %s",
		},
		{
			name: "pod address deleted",
			damage: func(t *testing.T, _ *testNode, pod *testPod) {
				runIn(t, pod.ns.Path(), "ip", "addr", "del", firstPod.String()+"/24",
					"dev", "eth0")
			},
			want: "pod interface eth0 lacks address 10.200.0.2/24",
		},
		{
			name: "pod default route deleted",
			damage: func(t *testing.T, _ *testNode, pod *testPod) {
				runIn(t, pod.ns.Path(), "ip", "route", "del", "default")
			},
			want: "pod route 0.0.0.0/0 via 10.200.0.1 missing",
		},
		{
			name: "host veth down",
			damage: func(t *testing.T, n *testNode, pod *testPod) {
				n.run(t, "ip", "link", "set", pod.hostName(), "down")
			},
			want: "host veth %s is down",
		},
		{
			name: "veth pair deleted",
			damage: func(t *testing.T, n *testNode, pod *testPod) {
				n.run(t, "ip", "link", "del", pod.hostName())
			},
			want: "host veth %s missing",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newTestNode(t)
			list := n.defaultList(t)
			pod := newTestPod(t)
			n.mustAdd(t, list, pod)
			if err := n.check(list, pod); err != nil {
				t.Fatalf("CHECK right after ADD: %v", err)
			}

			tt.damage(t, n, pod)
			err := n.check(list, pod)
			if err == nil {
				t.Fatal("CHECK passed after the damage")
			}
			t.Logf("CHECK error: %v", err)
			if code := cniCode(err); code != int(cni.ErrCodeCheckFailed) {
				t.Errorf("error code %d, want %d: %v", code, cni.ErrCodeCheckFailed, err)
			}
			want := tt.want
			if strings.Contains(want, "%s") {
				want = strings.ReplaceAll(want, "%s", pod.hostName())
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("CHECK error %q does not name %q", err, want)
			}
		})
	}
}
