package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunFlags(t *testing.T) {
	cases := []struct {
		name     string
		args     []string
		wantCode int
		stdout   string
		stderr   string
	}{
		{"version", []string{"--version"}, exitOK, "ferryd ", ""},
		{"help", []string{"--help"}, exitOK, "", "Usage: ferryd"},
		{"unknown flag", []string{"--bogus"}, exitUsage, "", "flag provided but not defined"},
		{"argument", []string{"start"}, exitUsage, "", `unexpected argument "start"`},
		{"log level", []string{"--log-level", "loud"}, exitUsage, "",
			`invalid log level "loud"`},
		{"missing config", []string{"--config", "/nonexistent/ferryd.yaml"}, exitUsage, "",
			"pass the configuration file with --config FILE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, &stdout, &stderr)
			if code != tc.wantCode {
				t.Errorf("exit status = %d, want %d; stderr:\n%s", code, tc.wantCode, &stderr)
			}
			if !strings.Contains(stdout.String(), tc.stdout) {
				t.Errorf("stdout %q does not contain %q", &stdout, tc.stdout)
			}
			if !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stderr %q does not contain %q", &stderr, tc.stderr)
			}
		})
	}
}

func TestRunInvalidConfigChangesNothing(t *testing.T) {
	dir := t.TempDir()
	bpffs := filepath.Join(dir, "bpf")
	confDir := filepath.Join(dir, "net.d")
	config := "nodeName: worker-0\nclusterCIDR: 10.200.0.0/16\n" +
		"bpffsDir: " + bpffs + "\ncni: {confDir: " + confDir + "}\n" +
		"nodes:\n  - {name: worker-0, ip: 10.0.1.20, podCIDR: 10.201.0.0/24}\n" +
		"  - {name: worker-1, ip: 10.0.1.20, podCIDR: 10.200.1.0/24}\n"
	path := filepath.Join(dir, "ferryd.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, args := range [][]string{{"--config", path}, {"--config", path, "--remove"}} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != exitUsage {
			t.Errorf("%v: exit status = %d, want %d", args, code, exitUsage)
		}
		for _, want := range []string{
			"invalid config " + path + ":",
			"nodes[0].podCIDR: 10.201.0.0/24 is outside clusterCIDR",
			"nodes[1].ip: duplicate node IP 10.0.1.20",
		} {
			if !strings.Contains(stderr.String(), want) {
				t.Errorf("%v: stderr does not contain %q:\n%s", args, want, &stderr)
			}
		}
	}
	for _, p := range []string{bpffs, confDir} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s exists after an invalid config (stat: %v)", p, err)
		}
	}
}
