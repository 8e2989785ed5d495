package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunUsageErrors(t *testing.T) {
	cases := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"no command", nil, "missing command: use one of status, routes"},
		{"unknown command", []string{"pods"}, `unknown command "pods"`},
		{"unknown format", []string{"-o", "yaml", "status"}, `invalid output format "yaml"`},
		{"extra argument", []string{"routes", "all"}, `unexpected argument "all" after routes`},
		{"unknown flag", []string{"--verbose", "status"}, "flag provided but not defined"},
		{"pod not an address", []string{"--pod", "pod-a", "nat"}, `invalid --pod "pod-a"`},
		{"pod with routes", []string{"--pod", "10.200.0.5", "routes"},
			"use it with nat"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(tc.args, &stdout, &stderr); code != exitUsage {
				t.Errorf("exit status = %d, want %d", code, exitUsage)
			}
			if !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stderr %q does not contain %q", &stderr, tc.stderr)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout = %q, want nothing", &stdout)
			}
		})
	}
}

func TestRunHelpListsCommands(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--help"}, &stdout, &stderr); code != exitOK {
		t.Errorf("exit status = %d, want %d", code, exitOK)
	}
	for _, name := range commandOrder {
		if !strings.Contains(stderr.String(), "  "+name+" ") {
			t.Errorf("help does not list %s:\n%s", name, &stderr)
		}
	}
}

func TestRunNotLoaded(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ferry")
	for _, name := range commandOrder {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run([]string{"--bpffs-dir", dir, name}, &stdout, &stderr); code != exitFailure {
				t.Errorf("exit status = %d, want %d", code, exitFailure)
			}
			want := "ferry dataplane is not loaded under " + dir + ": start ferryd"
			if !strings.Contains(stderr.String(), want) {
				t.Errorf("stderr %q does not contain %q", &stderr, want)
			}
		})
	}
}
