package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// conflistConfig returns a configuration whose CNI configuration goes into confDir.
func conflistConfig(t *testing.T, confDir string) string {
	t.Helper()
	return "nodeName: worker-0\nclusterCIDR: 10.200.0.0/16\n" +
		"nodes:\n  - {name: worker-0, ip: 10.0.1.20, podCIDR: 10.200.0.0/24}\n" +
		"cni:\n  confDir: " + confDir + "\n  ipamDataDir: /var/lib/ferry/ipam\n"
}

func TestBuildConflist(t *testing.T) {
	cfg := parseConfig(t, conflistConfig(t, t.TempDir()))
	data, err := buildConflist(cfg, 1400)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := libcni.ConfListFromBytes(data); err != nil {
		t.Fatalf("libcni rejects the list: %v\n%s", err, data)
	}

	var raw struct {
		CNIVersion  string   `json:"cniVersion"`
		CNIVersions []string `json:"cniVersions"`
		Plugins     []struct {
			Type     string `json:"type"`
			BPFFSDir string `json:"bpffsDir"`
			MTU      int    `json:"mtu"`
			IPAM     struct {
				Type    string                      `json:"type"`
				Ranges  [][]struct{ Subnet string } `json:"ranges"`
				DataDir string                      `json:"dataDir"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}

	// A runtime whose libcni predates cniVersions, such as containerd 1.6 and 1.7, takes
	// cniVersion, and those runtimes reject results of version 1.1.0.
	if raw.CNIVersion != "1.0.0" {
		t.Errorf("cniVersion %q, want 1.0.0", raw.CNIVersion)
	}
	if want := []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"}; !slices.Equal(raw.CNIVersions,
		want) {
		t.Errorf("cniVersions %v, want %v", raw.CNIVersions, want)
	}

	if len(raw.Plugins) != 1 {
		t.Fatalf("%d plugins, want the ferry plugin alone", len(raw.Plugins))
	}
	p := raw.Plugins[0]
	if p.Type != PluginName || p.BPFFSDir != "/sys/fs/bpf/ferry" || p.MTU != 1400 {
		t.Errorf("plugin entry %+v, want type ferry, bpffsDir /sys/fs/bpf/ferry, mtu 1400", p)
	}
	if p.IPAM.Type != "host-local" || len(p.IPAM.Ranges) != 1 ||
		p.IPAM.Ranges[0][0].Subnet != "10.200.0.0/24" ||
		p.IPAM.DataDir != "/var/lib/ferry/ipam" {
		t.Errorf("ipam %+v, want host-local on 10.200.0.0/24 in /var/lib/ferry/ipam", p.IPAM)
	}
}

func TestWriteConflist(t *testing.T) {
	confDir := filepath.Join(t.TempDir(), "net.d")
	cfg := parseConfig(t, conflistConfig(t, confDir))
	path := filepath.Join(confDir, cfg.CNI.ConfName)

	written, err := writeConflist(cfg, 1500)
	if err != nil {
		t.Fatalf("write into a missing directory: %v", err)
	}
	if !written {
		t.Error("writeConflist reported no write for a new file")
	}
	if _, err := libcni.ConfListFromFile(path); err != nil {
		t.Errorf("libcni rejects the written file: %v", err)
	}

	// A temporary file of a ferryd killed before its rename.
	stale := filepath.Join(confDir, "."+cfg.CNI.ConfName+".123456.tmp")
	if err := os.WriteFile(stale, []byte(`{"cniVersion":`), 0o644); err != nil {
		t.Fatal(err)
	}
	written, err = writeConflist(cfg, 1500)
	if err != nil {
		t.Fatal(err)
	}
	if written {
		t.Error("writeConflist rewrote an unchanged file")
	}
	written, err = writeConflist(cfg, 1400)
	if err != nil {
		t.Fatal(err)
	}
	if !written {
		t.Error("writeConflist did not write a changed MTU")
	}

	entries, err := os.ReadDir(confDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != cfg.CNI.ConfName {
			t.Errorf("configuration directory contains %s besides %s", e.Name(),
				cfg.CNI.ConfName)
		}
	}
	files, err := libcni.ConfFiles(confDir, []string{".conf", ".conflist", ".json"})
	if err != nil || len(files) != 1 {
		t.Errorf("runtimes would load %v (error %v), want only %s", files, err, path)
	}
}
