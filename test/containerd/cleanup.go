package containerd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ferrynet/ferry/test/lab"
)

// cgroupRoot is where the cgroup hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// killWait bounds the wait for killed processes to exit.
const killWait = 10 * time.Second

// CleanStale removes the runtimes in RootDir whose lab has no running owner, as after a test
// process that was killed before its cleanup. It returns the directories it removed.
func CleanStale() ([]string, error) {
	entries, err := os.ReadDir(RootDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", RootDir, err)
	}
	labs, err := lab.List()
	if err != nil {
		return nil, err
	}
	alive := map[string]bool{}
	for _, info := range labs {
		if info.OwnerAlive {
			alive[info.Name] = true
		}
	}

	var removed []string
	var errs []error
	for _, e := range entries {
		labName, _, ok := strings.Cut(e.Name(), "-")
		if !e.IsDir() || !ok || alive[labName] {
			continue
		}
		dir := filepath.Join(RootDir, e.Name())
		if err := cleanDir(dir, "/ferry-"+e.Name()); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, dir)
	}
	return removed, errors.Join(errs...)
}

// cleanDir kills the processes of the runtime in dir (containerd, its shims and every
// process in a cgroup under cgroupParent), unmounts everything under dir, then deletes dir,
// the shims' sockets and the cgroups.
func cleanDir(dir, cgroupParent string) error {
	var errs []error
	shimSockets := shimSocketPaths(dir)
	if err := killRuntimeProcesses(dir, cgroupParent); err != nil {
		errs = append(errs, err)
	}
	if err := unmountUnder(dir); err != nil {
		errs = append(errs, err)
	}
	for _, path := range shimSockets {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove shim socket: %w", err))
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("remove containerd directory: %w", err))
	}
	if err := removeCgroups(cgroupParent); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// shimSocketPaths returns the sockets of the runtime's shims. containerd 1.6 puts them in
// /run/containerd/s whatever its configuration, and records each in the task's address file.
func shimSocketPaths(dir string) []string {
	files, _ := filepath.Glob(filepath.Join(dir, "state", "io.containerd.runtime.v2.task",
		"*", "*", "address"))
	var paths []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		addr := strings.TrimSpace(string(data))
		if path, ok := strings.CutPrefix(addr, "unix://"); ok && filepath.IsAbs(path) {
			paths = append(paths, path)
		}
	}
	return paths
}

// killRuntimeProcesses kills containerd and the shims whose command line names a file in
// dir, and every process in a cgroup under cgroupParent, then waits for them to exit.
func killRuntimeProcesses(dir, cgroupParent string) error {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return fmt.Errorf("list processes: %w", err)
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if commandNamesDir(pid, dir) || inCgroup(pid, cgroupParent) {
			pids = append(pids, pid)
		}
	}

	var errs []error
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil &&
			!errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("kill pid %d: %w", pid, err))
		}
	}
	deadline := time.Now().Add(killWait)
	for _, pid := range pids {
		for running(pid) {
			if time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("pid %d still runs %s after SIGKILL", pid,
					killWait))
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return errors.Join(errs...)
}

// commandNamesDir reports whether an argument of the process's command line is dir or a
// path under it, as containerd's --config and the shims' -address are.
func commandNamesDir(pid int, dir string) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	for _, arg := range bytes.Split(data, []byte{0}) {
		s := string(arg)
		if s == dir || strings.HasPrefix(s, dir+"/") {
			return true
		}
	}
	return false
}

// inCgroup reports whether the process is in cgroupParent or below it in any hierarchy.
func inCgroup(pid int, cgroupParent string) bool {
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		// Each line is hierarchy-ID:controllers:path.
		parts := strings.SplitN(s.Text(), ":", 3)
		if len(parts) == 3 &&
			(parts[2] == cgroupParent || strings.HasPrefix(parts[2], cgroupParent+"/")) {
			return true
		}
	}
	return false
}

// running reports whether pid exists and is not a zombie.
func running(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && fields[0] != "Z"
}

// unmountUnder detaches every mount at or below dir, the deepest first, until none is left.
func unmountUnder(dir string) error {
	for range 10 {
		mounts, err := mountPointsUnder(dir)
		if err != nil {
			return err
		}
		if len(mounts) == 0 {
			return nil
		}
		for _, m := range mounts {
			err := unix.Unmount(m, unix.MNT_DETACH)
			if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("unmount %s: %w", m, err)
			}
		}
	}
	return fmt.Errorf("unmount under %s: mounts remain after 10 rounds", dir)
}

// mountPointsUnder returns the mount points at or below dir, longest path first.
func mountPointsUnder(dir string) ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		point := unescapeMountPath(fields[4])
		if point == dir || strings.HasPrefix(point, dir+"/") {
			points = append(points, point)
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	return slices.Compact(points), nil
}

// unescapeMountPath decodes the octal escapes (\040 for a space) of mountinfo paths.
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeCgroups deletes cgroupParent and the cgroups below it in every hierarchy, children
// first. A cgroup directory goes with rmdir once no process is in it.
func removeCgroups(cgroupParent string) error {
	roots := []string{filepath.Join(cgroupRoot, cgroupParent)}
	hierarchies, _ := os.ReadDir(cgroupRoot)
	for _, h := range hierarchies {
		if h.IsDir() {
			roots = append(roots, filepath.Join(cgroupRoot, h.Name(), cgroupParent))
		}
	}

	var errs []error
	for _, root := range roots {
		var dirs []string
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("list cgroups under %s: %w", root, err))
			continue
		}
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := unix.Rmdir(dirs[i]); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}
