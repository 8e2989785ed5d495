package agent

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// writePluginSource writes a stand-in plugin binary and returns its path.
func writePluginSource(t *testing.T, data string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), PluginName)
	if err := os.WriteFile(path, []byte(data), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// inode returns the inode number of path.
func inode(t *testing.T, path string) uint64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Ino
}

// assertNoTempFiles checks that dir contains only the installed plugin.
func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != PluginName {
			t.Errorf("%s contains %s besides the plugin", dir, e.Name())
		}
	}
}

func TestInstallPluginCopies(t *testing.T) {
	src := writePluginSource(t, "plugin v1")
	binDir := filepath.Join(t.TempDir(), "opt", "cni", "bin")

	installed, err := InstallPlugin(src, binDir)
	if err != nil {
		t.Fatalf("install into a missing directory: %v", err)
	}
	if !installed {
		t.Error("InstallPlugin reported no write for a missing plugin")
	}
	dst := filepath.Join(binDir, PluginName)
	data, err := os.ReadFile(dst)
	if err != nil {
		t.Fatalf("read installed plugin: %v", err)
	}
	if string(data) != "plugin v1" {
		t.Errorf("installed plugin contains %q, want %q", data, "plugin v1")
	}
	st, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o755 {
		t.Errorf("installed plugin has mode %v, want 0755", st.Mode().Perm())
	}
	assertNoTempFiles(t, binDir)
}

func TestInstallPluginSkipsIdentical(t *testing.T) {
	src := writePluginSource(t, "plugin v1")
	binDir := t.TempDir()
	if _, err := InstallPlugin(src, binDir); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(binDir, PluginName)
	before := inode(t, dst)

	installed, err := InstallPlugin(src, binDir)
	if err != nil {
		t.Fatalf("second install: %v", err)
	}
	if installed {
		t.Error("InstallPlugin rewrote an identical plugin")
	}
	if after := inode(t, dst); after != before {
		t.Errorf("plugin inode changed from %d to %d on an identical install", before, after)
	}
}

func TestInstallPluginFixesMode(t *testing.T) {
	src := writePluginSource(t, "plugin v1")
	binDir := t.TempDir()
	dst := filepath.Join(binDir, PluginName)
	if err := os.WriteFile(dst, []byte("plugin v1"), 0o644); err != nil {
		t.Fatal(err)
	}

	installed, err := InstallPlugin(src, binDir)
	if err != nil {
		t.Fatal(err)
	}
	if !installed {
		t.Error("InstallPlugin left a plugin that is not executable")
	}
	if st, err := os.Stat(dst); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("installed plugin: %v, error %v; want mode 0755", st.Mode(), err)
	}
}

func TestInstallPluginReplacesByRename(t *testing.T) {
	binDir := t.TempDir()
	if _, err := InstallPlugin(writePluginSource(t, "plugin v1"), binDir); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(binDir, PluginName)
	// A runtime that runs the old plugin keeps its file open.
	running, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer running.Close()
	before := inode(t, dst)

	installed, err := InstallPlugin(writePluginSource(t, "plugin v2"), binDir)
	if err != nil {
		t.Fatalf("install a new plugin: %v", err)
	}
	if !installed {
		t.Error("InstallPlugin reported no write for a changed plugin")
	}
	if after := inode(t, dst); after == before {
		t.Error("the new plugin was written into the old file, not renamed over it")
	}
	if data, _ := os.ReadFile(dst); string(data) != "plugin v2" {
		t.Errorf("installed plugin contains %q, want %q", data, "plugin v2")
	}
	var old bytes.Buffer
	if _, err := old.ReadFrom(running); err != nil || old.String() != "plugin v1" {
		t.Errorf("open old plugin reads %q, error %v; want %q", old.String(), err, "plugin v1")
	}
	assertNoTempFiles(t, binDir)
}

func TestInstallPluginSameFile(t *testing.T) {
	src := writePluginSource(t, "plugin v1")
	installed, err := InstallPlugin(src, filepath.Dir(src))
	if err != nil {
		t.Fatalf("install onto itself: %v", err)
	}
	if installed {
		t.Error("InstallPlugin rewrote the plugin onto itself")
	}
}

func TestInstallPluginErrors(t *testing.T) {
	t.Run("missing source", func(t *testing.T) {
		binDir := t.TempDir()
		_, err := InstallPlugin(filepath.Join(t.TempDir(), PluginName), binDir)
		if !errors.Is(err, errNoPluginSource) {
			t.Errorf("error %v, want errNoPluginSource", err)
		}
		if _, err := os.Stat(filepath.Join(binDir, PluginName)); err == nil {
			t.Error("a plugin was installed from a missing source")
		}
	})
	t.Run("source is a directory", func(t *testing.T) {
		_, err := InstallPlugin(t.TempDir(), t.TempDir())
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("error %v, want one about a regular file", err)
		}
	})
	t.Run("bin dir is a file", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "bin")
		if err := os.WriteFile(file, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := InstallPlugin(writePluginSource(t, "plugin"), file)
		if err == nil || !strings.Contains(err.Error(), "install CNI plugin into "+file) {
			t.Errorf("error %v, want one naming %s", err, file)
		}
	})
}
