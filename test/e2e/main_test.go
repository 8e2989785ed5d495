// Package e2e runs ferry on the namespace lab: ferryd on every node, pods networked by the
// ferry CNI plugin, and traffic between pods, nodes, Services and the internet stand-in.
package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ferrynet/ferry/test/lab"
)

// binDir contains ferry, ferryd and ferryctl: those of $FERRY_BIN_DIR when it is set, as in
// the test VM, which has no Go toolchain, else a build of this checkout by TestMain.
var binDir string

// binaries are the programs that the tests run from binDir.
var binaries = []string{"ferry", "ferryd", "ferryctl"}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		// Every test skips itself; nothing to build.
		return m.Run()
	}
	if dir := os.Getenv("FERRY_BIN_DIR"); dir != "" {
		if err := checkBinaries(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		binDir = dir
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "ferry-e2e-bin-")
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

func checkBinaries(dir string) error {
	for _, name := range binaries {
		path := filepath.Join(dir, name)
		info, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("check FERRY_BIN_DIR: %w", err)
		}
		if info.Mode()&0o111 == 0 {
			return fmt.Errorf("check FERRY_BIN_DIR: %s is not executable", path)
		}
	}
	return nil
}

func buildBinaries(dir string) error {
	return lab.GoBuild(dir+"/", nil, "./cmd/ferry", "./cmd/ferryd", "./cmd/ferryctl")
}
