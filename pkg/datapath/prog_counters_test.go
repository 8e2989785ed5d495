package datapath

import (
	"net/netip"
	"testing"

	"github.com/ferrynet/ferry/internal/packettest"
)

// countersAt returns the packets counted at hook, by reason.
func countersAt(t *testing.T, e *progEnv, hook Hook) map[Reason]uint64 {
	t.Helper()
	list, err := e.dp.CountersByHook()
	if err != nil {
		t.Fatalf("read counters by hook: %v", err)
	}
	out := map[Reason]uint64{}
	for _, c := range list {
		if c.Hook == hook {
			out[c.Reason] = c.Packets
		}
	}
	return out
}

func TestCountersByHook(t *testing.T) {
	e := newProgEnv(t)
	internet := netip.MustParseAddr("203.0.113.10")

	// A pod's SYN to the internet: to-stack at the pod hook, snat at uplink egress.
	syn := packettest.Build(t, e.podA.tcpFrom(internet))
	if verdict, _ := e.run(t, e.dp.fromPod, syn, e.podA.IfIndex); verdict != 0 {
		t.Fatalf("from_pod verdict %d for a SYN to the internet, want TC_ACT_OK", verdict)
	}
	if verdict, _ := e.run(t, e.dp.uplinkEgress, syn, 0); verdict != 0 {
		t.Fatalf("uplink egress verdict %d for a pod's SYN, want TC_ACT_OK", verdict)
	}

	pod := countersAt(t, e, HookFromPod)
	egress := countersAt(t, e, HookUplinkEgress)
	ingress := countersAt(t, e, HookUplinkIngress)
	if pod[ReasonToStack] != 1 {
		t.Errorf("from-pod to-stack = %d, want 1", pod[ReasonToStack])
	}
	if pod[ReasonSNAT] != 0 {
		t.Errorf("from-pod snat = %d, want 0", pod[ReasonSNAT])
	}
	if egress[ReasonSNAT] != 1 {
		t.Errorf("uplink-egress snat = %d, want 1", egress[ReasonSNAT])
	}
	if egress[ReasonToStack] != 0 {
		t.Errorf("uplink-egress to-stack = %d, want 0", egress[ReasonToStack])
	}
	for r, n := range ingress {
		if n != 0 {
			t.Errorf("uplink-ingress %s = %d, want 0", r, n)
		}
	}

	sums, err := e.dp.Counters()
	if err != nil {
		t.Fatalf("read counters: %v", err)
	}
	for _, c := range sums {
		if c.Hook != HookAll {
			t.Errorf("summed counter %s has hook %s, want all", c.Reason, c.Hook)
		}
		if c.Reason == ReasonSNAT && c.Packets != 1 {
			t.Errorf("summed snat = %d, want 1", c.Packets)
		}
	}
}
