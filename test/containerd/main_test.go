package containerd_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ferrynet/ferry/test/lab"
)

// binDir contains ferry, ferryd, ferryctl and pause, built from this checkout by TestMain.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		// Every test skips itself; nothing to build.
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "ferry-containerd-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "create bin dir: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := buildBinaries(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	binDir = dir
	return m.Run()
}

// buildBinaries builds ferry's commands and the static pause program into dir.
func buildBinaries(dir string) error {
	if err := lab.GoBuild(dir+"/", nil, "./cmd/ferry", "./cmd/ferryd", "./cmd/ferryctl"); err != nil {
		return err
	}
	return lab.GoBuild(filepath.Join(dir, "pause"), []string{"CGO_ENABLED=0"},
		"./test/containerd/pause")
}
