package datapath

import (
	"runtime"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/ferrynet/ferry/internal/packettest"
)

// raceRounds is how many new flows TestProgNATNewFlowOnTwoCPUs starts. The
// two runs of a round overlap in some rounds only, so a program that made
// two mappings for one flow fails the test with high probability, not always.
const raceRounds = 300

// runOnCPU runs prog on frame in the test namespace on a thread bound to cpu,
// once start is closed.
func (e *progEnv) runOnCPU(prog *ebpf.Program, frame []byte, cpu int,
	start <-chan struct{}) (uint32, []byte, error) {
	out := make([]byte, len(frame)+256)
	opts := &ebpf.RunOptions{Data: frame, DataOut: out}
	var verdict uint32
	err := e.netns.Do(func(ns.NetNS) error {
		var old, set unix.CPUSet
		if err := unix.SchedGetaffinity(0, &old); err != nil {
			return err
		}
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			return err
		}
		defer unix.SchedSetaffinity(0, &old)
		<-start
		var err error
		verdict, err = prog.Run(opts)
		return err
	})
	return verdict, opts.DataOut, err
}

func TestProgNATNewFlowOnTwoCPUs(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("skipping: the race needs two CPUs")
	}
	e := newProgEnv(t)
	udp := layers.IPProtocolUDP

	for i := range raceRounds {
		port := uint16(20000 + i)
		// A flow of pod B holds the port toward the same server, so both
		// CPUs leave the pod's port and race with random ones.
		holder := natFlow{pod: e.podB.IP, proto: udp, podPort: port, remote: testDNS,
			remotePort: 53, payload: []byte("holder")}
		if verdict, _ := e.run(t, e.dp.uplinkEgress, packettest.Build(t, holder.egressFrame()),
			0); verdict != tcActOK {
			t.Fatalf("round %d: holder flow: verdict %d", i, verdict)
		}

		f := natFlow{pod: e.podA.IP, proto: udp, podPort: port, remote: testDNS,
			remotePort: 53, payload: []byte("query")}
		in := packettest.Build(t, f.egressFrame())
		start := make(chan struct{})
		var (
			wg       sync.WaitGroup
			verdicts [2]uint32
			outs     [2][]byte
			errs     [2]error
		)
		for cpu := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				verdicts[cpu], outs[cpu], errs[cpu] = e.runOnCPU(e.dp.uplinkEgress, in, cpu,
					start)
			}()
		}
		close(start)
		wg.Wait()

		for cpu := range 2 {
			if errs[cpu] != nil {
				t.Fatalf("round %d: run on CPU %d: %v", i, cpu, errs[cpu])
			}
			if verdicts[cpu] != tcActOK {
				t.Fatalf("round %d: verdict %d on CPU %d, want %d", i, verdicts[cpu], cpu,
					tcActOK)
			}
		}
		_, port0, _ := decodeIPv4(t, outs[0])
		_, port1, _ := decodeIPv4(t, outs[1])
		if port0 != port1 {
			t.Fatalf("round %d: the two packets of one flow left from ports %d and %d",
				i, port0, port1)
		}
	}

	entries, err := e.dp.readNAT()
	if err != nil {
		t.Fatalf("read NAT table: %v", err)
	}
	if got, want := len(entries), 2*2*raceRounds; got != want {
		t.Errorf("NAT table has %d entries, want %d: two per flow", got, want)
	}
	for key, value := range entries {
		if NATDirection(key.Dir) == NATIngress {
			if _, ok := entries[egressKeyOf(key, value)]; !ok {
				t.Errorf("ingress entry %+v has no egress entry", key)
			}
		}
	}
}
