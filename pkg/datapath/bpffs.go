package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Names of the pinned objects under the bpffs directory. Maps are pinned at
// the top level under their C names, so that
// `bpftool map dump pinned <dir>/<map>` finds them.
const (
	progsDir = "progs"
	linksDir = "links"

	progFromPod       = "from_pod"
	progUplinkIngress = "uplink_ingress"
	progUplinkEgress  = "uplink_egress"

	linkUplinkIngress = "uplink_ingress"
	linkUplinkEgress  = "uplink_egress"
	podLinkPrefix     = "pod_"
)

// ErrNotLoaded is returned when the bpffs directory holds no loaded dataplane.
var ErrNotLoaded = errors.New("ferry dataplane is not loaded")

// defaultBPFFS is the mount point of the BPF filesystem on systemd hosts.
const defaultBPFFS = "/sys/fs/bpf"

// ensureBPFFS creates dir and mounts a bpffs there unless it already sits on
// one. A directory under /sys/fs/bpf gets the bpffs mounted there first,
// because sysfs itself takes no new directories.
func ensureBPFFS(dir string) error {
	under := strings.HasPrefix(filepath.Clean(dir)+"/", defaultBPFFS+"/")
	if under && !isBPFFS(defaultBPFFS) {
		if err := unix.Mount("bpffs", defaultBPFFS, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount bpffs at %s: %w", defaultBPFFS, err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create bpffs directory %s: %w", dir, err)
	}

	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", dir, err)
	}
	if st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := unix.Mount("bpffs", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs at %s: %w", dir, err)
	}
	return nil
}

func isBPFFS(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

func podLinkName(hostIfName string) string { return podLinkPrefix + hostIfName }

// pinAtomically pins obj under path, replacing what is pinned there without
// a moment in which the path is missing.
func pinAtomically(path string, pin func(string) error) error {
	tmp := path + "_new" // bpffs rejects names with dots
	_ = os.Remove(tmp)
	if err := pin(tmp); err != nil {
		return fmt.Errorf("pin %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("rename pin %s: %w", path, err)
	}
	return nil
}

// Remove detaches ferry's uplink programs and deletes every object pinned
// under dir, and the directory itself. It works in the calling thread's
// network namespace, which must be the node's. Pod programs attached with tcx
// are detached as their pins go, and ferry's cls_bpf filters on the veths of
// the endpoints are deleted.
func Remove(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var errs []error
	if m, err := OpenMaps(dir); err == nil {
		if s, err := m.Settings(); err == nil && s.UplinkIfIndex != 0 {
			for _, dir := range []direction{ingress, egress} {
				h := hook{ifindex: s.UplinkIfIndex, dir: dir}
				if err := detachClsact(h); err != nil {
					errs = append(errs, err)
				}
			}
		}
		// ferry's filters on the veths of pods that still exist; other
		// software's filters there stay.
		eps, _ := m.Endpoints()
		for _, ep := range eps {
			if err := detachClsact(hook{ifindex: ep.IfIndex, dir: ingress}); err != nil {
				errs = append(errs, err)
			}
		}
		m.Close()
	}
	pins, _ := os.ReadDir(filepath.Join(dir, linksDir))
	for _, pin := range pins {
		if err := removeLinkPin(filepath.Join(dir, linksDir, pin.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		// A bpffs mounted at dir itself cannot be removed while mounted.
		if err := unix.Unmount(dir, 0); err == nil {
			err = os.Remove(dir)
			if err != nil {
				errs = append(errs, err)
			}
		} else {
			errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}

func isNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }
