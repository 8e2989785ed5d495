package lab

import (
	"context"
	"os"
	"os/exec"
	"testing"
)

// RequiredTools lists the commands that a lab runs. NewTest skips when one is missing.
var RequiredTools = []string{"ip", "nsenter", "iptables", "ping"}

// NewTest builds a lab for a test and closes it in t.Cleanup. It skips the test when the
// process is not root or a command in RequiredTools is missing, and fails it when New
// fails. Setup and teardown steps go to t.Logf unless opts.Logf is set.
func NewTest(t testing.TB, opts Options) *Lab {
	t.Helper()
	SkipUnlessPrivileged(t)
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	l, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("build lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close lab %s: %v", l.Name, err)
		}
	})
	return l
}

// SkipUnlessPrivileged skips the test when the process is not root or a command in
// RequiredTools is missing.
func SkipUnlessPrivileged(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("lab tests create network namespaces, which needs root; run go test as root")
	}
	for _, tool := range RequiredTools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("lab tests need the command %q, which is not in PATH; install it", tool)
		}
	}
}

// SkipWithoutPlugins skips the test when one of the CNI plugins is in none of binDirs.
func SkipWithoutPlugins(t testing.TB, binDirs []string, plugins ...string) {
	t.Helper()
	for _, plugin := range plugins {
		found := false
		for _, dir := range binDirs {
			if st, err := os.Stat(dir + "/" + plugin); err == nil && !st.IsDir() {
				found = true
				break
			}
		}
		if !found {
			t.Skipf("CNI plugin %q is in none of %v; install containernetworking-plugins",
				plugin, binDirs)
		}
	}
}
