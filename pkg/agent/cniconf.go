package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"

	"github.com/ferrynet/ferry/pkg/config"
)

// CNI versions of the configuration list. A runtime whose libcni does not
// read cniVersions uses cniVersion 1.0.0. libcni 1.3.1 reads cniVersions and
// picks the highest version it supports, 1.1.0.
const cniVersion = "1.0.0"

var cniVersions = []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// networkName is the name of ferry's network in the configuration list.
const networkName = "ferry"

type cniConflist struct {
	CNIVersion  string      `json:"cniVersion"`
	CNIVersions []string    `json:"cniVersions"`
	Name        string      `json:"name"`
	Plugins     []cniPlugin `json:"plugins"`
}

type cniPlugin struct {
	Type     string  `json:"type"`
	BPFFSDir string  `json:"bpffsDir"`
	MTU      int     `json:"mtu"`
	IPAM     cniIPAM `json:"ipam"`
}

// cniIPAM configures the host-local IPAM plugin.
type cniIPAM struct {
	Type    string           `json:"type"`
	Ranges  [][]cniIPAMRange `json:"ranges"`
	Routes  []cniRoute       `json:"routes"`
	DataDir string           `json:"dataDir"`
}

type cniIPAMRange struct {
	Subnet string `json:"subnet"`
}

type cniRoute struct {
	Dst string `json:"dst"`
}

// buildConflist returns the CNI configuration list of this node: the ferry
// plugin with host-local allocating from the node's pod CIDR.
func buildConflist(cfg *config.Config, mtu int) ([]byte, error) {
	list := cniConflist{
		CNIVersion:  cniVersion,
		CNIVersions: cniVersions,
		Name:        networkName,
		Plugins: []cniPlugin{{
			Type:     "ferry",
			BPFFSDir: cfg.BPFFSDir,
			MTU:      mtu,
			IPAM: cniIPAM{
				Type:    "host-local",
				Ranges:  [][]cniIPAMRange{{{Subnet: cfg.Self().PodCIDR.String()}}},
				Routes:  []cniRoute{{Dst: "0.0.0.0/0"}},
				DataDir: cfg.CNI.IPAMDataDir,
			},
		}},
	}
	data, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode CNI configuration list: %w", err)
	}
	// Runtimes load the list with libcni, so a list that libcni rejects never reaches the
	// configuration directory.
	if _, err := libcni.ConfListFromBytes(data); err != nil {
		return nil, fmt.Errorf("validate CNI configuration list: %w", err)
	}
	return append(data, '\n'), nil
}

// writeConflist writes the CNI configuration list unless the file already
// has this content, and reports whether it wrote it.
func writeConflist(cfg *config.Config, mtu int) (bool, error) {
	data, err := buildConflist(cfg, mtu)
	if err != nil {
		return false, err
	}
	path := filepath.Join(cfg.CNI.ConfDir, cfg.CNI.ConfName)
	removeStaleTempFiles(path)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	if err := writeFileAtomic(path, data, 0o644); err != nil {
		return false, err
	}
	return true, nil
}

// removeConflist deletes the CNI configuration list, if there is one.
func removeConflist(cfg *config.Config) error {
	path := filepath.Join(cfg.CNI.ConfDir, cfg.CNI.ConfName)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove CNI configuration: %w", err)
	}
	return nil
}

// removeStaleTempFiles deletes the temporary files of writeFileAtomic for path that a
// ferryd killed between creating and renaming one left behind. Only one ferryd runs per
// node, so no other writer owns them.
func removeStaleTempFiles(path string) {
	stale, _ := filepath.Glob(filepath.Join(filepath.Dir(path),
		"."+filepath.Base(path)+".*.tmp"))
	for _, f := range stale {
		os.Remove(f)
	}
}

// writeFileAtomic replaces path with data so that readers see the old file or
// the complete new one, never a part. The temporary file sits in the same
// directory, for an atomic rename, and its name ends in .tmp, which container
// runtimes do not load.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("create temporary file in %s: %w", dir, err)
	}
	renamed := false
	defer func() {
		if !renamed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("set mode of %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp.Name(), path, err)
	}
	renamed = true

	// The rename is durable once the directory is synced.
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
