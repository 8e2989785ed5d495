package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// buildPlugin builds this command into a temporary directory.
func buildPlugin(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ferry")
	out, err := exec.Command("go", "build", "-o", path, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("build plugin: %v\n%s", err, out)
	}
	return path
}

// runPlugin runs the plugin with the environment env and stdin, and returns its standard
// output, standard error and exit code.
func runPlugin(t *testing.T, path string, env []string, stdin string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(path)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		return stdout.String(), stderr.String(), exitErr.ExitCode()
	case err != nil:
		t.Fatalf("run plugin: %v", err)
	}
	return stdout.String(), stderr.String(), 0
}

func TestPluginOutput(t *testing.T) {
	path := buildPlugin(t)
	cniEnv := func(command string) []string {
		return []string{
			"CNI_COMMAND=" + command,
			"CNI_CONTAINERID=0123456789abcdef",
			"CNI_NETNS=/run/netns/ferry-cnitest-missing",
			"CNI_IFNAME=eth0",
			"CNI_PATH=/usr/lib/cni",
		}
	}

	t.Run("VERSION", func(t *testing.T) {
		stdout, _, code := runPlugin(t, path, []string{"CNI_COMMAND=VERSION"}, "")
		if code != 0 {
			t.Fatalf("exit code %d", code)
		}
		var info struct {
			SupportedVersions []string `json:"supportedVersions"`
		}
		if err := json.Unmarshal([]byte(stdout), &info); err != nil {
			t.Fatalf("stdout is not the version JSON: %v\n%s", err, stdout)
		}
		want := "0.3.1 0.4.0 1.0.0 1.1.0"
		if got := strings.Join(info.SupportedVersions, " "); got != want {
			t.Errorf("supported versions %q, want %q", got, want)
		}
	})

	t.Run("invalid configuration", func(t *testing.T) {
		stdin := `{"cniVersion":"1.0.0","name":"ferry","type":"ferry","mtu":10,` +
			`"ipam":{"type":"host-local"}}`
		stdout, _, code := runPlugin(t, path, cniEnv("ADD"), stdin)
		if code == 0 {
			t.Fatal("exit code 0 for an invalid configuration")
		}
		var cniErr types.Error
		if err := json.Unmarshal([]byte(stdout), &cniErr); err != nil {
			t.Fatalf("stdout is not a CNI error: %v\n%s", err, stdout)
		}
		if cniErr.Code != types.ErrInvalidNetworkConfig {
			t.Errorf("code %d, want %d: %s", cniErr.Code, types.ErrInvalidNetworkConfig,
				cniErr.Msg)
		}
		if !strings.Contains(cniErr.Msg, "invalid mtu 10") {
			t.Errorf("message %q does not name the invalid mtu", cniErr.Msg)
		}
	})

	t.Run("no command", func(t *testing.T) {
		stdout, stderr, _ := runPlugin(t, path, nil, "")
		if stdout != "" {
			t.Errorf("stdout %q, want nothing", stdout)
		}
		if !strings.Contains(stderr, "CNI protocol versions supported: 0.3.1, 0.4.0, 1.0.0, "+
			"1.1.0") {
			t.Errorf("stderr lacks the supported versions:\n%s", stderr)
		}
	})
}
