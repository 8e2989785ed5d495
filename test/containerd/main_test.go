package containerd_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	builds := []struct {
		args []string
		env  []string
	}{
		{args: []string{"build", "-o", dir + "/", "./cmd/ferry", "./cmd/ferryd", "./cmd/ferryctl"}},
		{
			args: []string{"build", "-o", filepath.Join(dir, "pause"), "./test/containerd/pause"},
			env:  []string{"CGO_ENABLED=0"},
		},
	}
	for _, b := range builds {
		cmd := exec.Command("go", b.args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), b.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s: %w\n%s", strings.Join(b.args, " "), err, out)
		}
	}
	return nil
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("find module root: not inside the ferry module")
	}
	return filepath.Dir(gomod), nil
}
