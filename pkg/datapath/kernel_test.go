package datapath

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

func requireKernelBTF(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		t.Skipf("skipping: the kernel has no BTF: %v", err)
	}
}

// conntrackLoaded reports whether nf_conntrack is in the kernel. The module
// has parameters, so /sys/module lists it also when it is built in.
func conntrackLoaded() bool {
	_, err := os.Stat("/sys/module/nf_conntrack")
	return err == nil
}

// kfuncCallSpec returns a collection with one program that calls the kfunc
// name, as the ELF loader marks such calls.
func kfuncCallSpec(name string) *ebpf.CollectionSpec {
	call := asm.Instruction{
		OpCode:   asm.OpCode(asm.JumpClass).SetJumpOp(asm.Call),
		Src:      asm.PseudoKfuncCall,
		Constant: -1,
	}.WithReference(name)
	return &ebpf.CollectionSpec{Programs: map[string]*ebpf.ProgramSpec{
		"test": {
			Type:         ebpf.SchedCLS,
			Instructions: asm.Instructions{call, asm.Mov.Imm(asm.R0, 0), asm.Return()},
			License:      "GPL",
		},
	}}
}

func TestCheckKernelUnknownKfunc(t *testing.T) {
	requireKernelBTF(t)
	err := checkKernel(btf.NewCache(), kfuncCallSpec("ferry_test_no_such_kfunc"))
	if !errors.Is(err, ErrMissingKernelFeature) {
		t.Fatalf("checkKernel returned %v, want ErrMissingKernelFeature", err)
	}
	if !strings.Contains(err.Error(), "kfunc ferry_test_no_such_kfunc not found") {
		t.Errorf("error does not name the missing kfunc: %v", err)
	}
}

func TestCheckKernelVmlinuxFunc(t *testing.T) {
	requireKernelBTF(t)
	// Any function in vmlinux's BTF passes the lookup, kfunc or not.
	if err := checkKernel(btf.NewCache(), kfuncCallSpec("tcp_sendmsg")); err != nil {
		t.Fatalf("checkKernel of a vmlinux function: %v", err)
	}
}

func TestCheckKernelConntrackKfuncs(t *testing.T) {
	requireKernelBTF(t)
	host, err := loadHost()
	if err != nil {
		t.Fatalf("load host program spec: %v", err)
	}
	pod, err := loadPod()
	if err != nil {
		t.Fatalf("load pod program spec: %v", err)
	}
	if got := calledKfuncs([]*ebpf.CollectionSpec{host, pod}); len(got) == 0 {
		t.Fatalf("found no kfunc calls in ferry's programs")
	}

	err = checkKernel(btf.NewCache(), host, pod)
	if conntrackLoaded() {
		if err != nil {
			t.Fatalf("checkKernel with nf_conntrack loaded: %v", err)
		}
		return
	}
	if !errors.Is(err, ErrMissingKernelFeature) {
		t.Fatalf("checkKernel without nf_conntrack returned %v, want ErrMissingKernelFeature", err)
	}
	for _, want := range []string{"bpf_skb_ct_lookup", "modprobe nf_conntrack"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

// TestLoadWithoutConntrack runs where nf_conntrack is a module that nothing
// has loaded yet, as in the test VM before its tests load it.
func TestLoadWithoutConntrack(t *testing.T) {
	requireRoot(t)
	if conntrackLoaded() {
		t.Skip("skipping: nf_conntrack is loaded")
	}
	dir, err := os.MkdirTemp("/sys/fs/bpf", "ferry-kernel-test-")
	if err != nil {
		t.Fatalf("create bpffs directory: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })

	d, err := Load(dir, LoadOptions{NATEntries: 1024})
	if err == nil {
		d.Close()
		t.Fatalf("Load without nf_conntrack succeeded, want ErrMissingKernelFeature")
	}
	if !errors.Is(err, ErrMissingKernelFeature) {
		t.Fatalf("Load returned %v, want ErrMissingKernelFeature", err)
	}
	t.Logf("Load: %v", err)
	if !strings.Contains(err.Error(), "modprobe nf_conntrack") {
		t.Errorf("error does not say how to load nf_conntrack: %v", err)
	}
}
