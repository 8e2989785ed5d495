package vm

import (
	"errors"
	"os"
	"testing"

	"github.com/cilium/ebpf"
)

// TestBrokenProgramLoads loads testdata/broken.c, which the verifier rejects,
// and fails with the verifier's log. 'make test-vm VM_BROKEN=1' compiles the
// program and runs this test to show how a rejected program fails the VM run.
func TestBrokenProgramLoads(t *testing.T) {
	path := os.Getenv("FERRY_VM_BROKEN_OBJ")
	if path == "" {
		t.Skip("skipping: FERRY_VM_BROKEN_OBJ is not set; 'make test-vm VM_BROKEN=1' sets it")
	}
	spec, err := ebpf.LoadCollectionSpec(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	coll, err := ebpf.NewCollection(spec)
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		t.Fatalf("the verifier rejected %s:\n%+v", path, verr)
	}
	if err != nil {
		t.Fatalf("load %s: %v", path, err)
	}
	coll.Close()
}
