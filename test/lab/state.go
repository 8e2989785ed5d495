package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	ownerFile    = "pid"
	detachedFile = "detached"
	// newDirGrace is how long a state directory without a pid file counts as being created
	// by another process, not left by a crash.
	newDirGrace = time.Minute
)

// Info describes a lab found in StateRoot.
type Info struct {
	// Name is the lab name, the prefix of its namespaces.
	Name string
	// OwnerPID is the pid of the process that created the lab, or 0 if unknown.
	OwnerPID int
	// OwnerAlive reports whether the owner process is still running.
	OwnerAlive bool
	// Detached reports whether the lab was created with Options.Detached.
	Detached bool
	// Namespaces lists the lab's entries in /run/netns.
	Namespaces []string
}

// writeOwner records the current process as the owner of the lab in dir. The file contains
// the pid and the process start time, so that a later process that gets the same pid does
// not count as the owner. The rename makes the file appear whole.
func writeOwner(dir string) error {
	pid := os.Getpid()
	start, err := processStartTime(pid)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, ownerFile+".tmp")
	content := fmt.Sprintf("%d %d\n", pid, start)
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return fmt.Errorf("write owner file %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, ownerFile)); err != nil {
		return fmt.Errorf("write owner file in %s: %w", dir, err)
	}
	return nil
}

// processStartTime returns field 22 of /proc/<pid>/stat, the start time in clock ticks
// since boot.
func processStartTime(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read start time of pid %d: %w", pid, err)
	}
	// The command name in field 2 may contain spaces, so count fields after its ')'.
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 20 {
		return 0, fmt.Errorf("read start time of pid %d: /proc/%d/stat has %d fields "+
			"after the command name, expected at least 20", pid, pid, len(fields))
	}
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse start time of pid %d: %w", pid, err)
	}
	return start, nil
}

// readInfo reads the state of the lab in StateRoot/<name>. ok is false when the directory
// has no owner file yet and is younger than newDirGrace, so another process may be creating
// it right now.
func readInfo(name string) (info Info, ok bool) {
	dir := filepath.Join(StateRoot, name)
	info = Info{Name: name, Namespaces: namespacesOf(name)}
	if _, err := os.Stat(filepath.Join(dir, detachedFile)); err == nil {
		info.Detached = true
	}
	data, err := os.ReadFile(filepath.Join(dir, ownerFile))
	if err != nil {
		st, statErr := os.Stat(dir)
		if statErr == nil && time.Since(st.ModTime()) < newDirGrace {
			return info, false
		}
		return info, true
	}
	var pid int
	var start uint64
	if _, err := fmt.Sscanf(string(data), "%d %d", &pid, &start); err != nil {
		return info, true
	}
	info.OwnerPID = pid
	if now, err := processStartTime(pid); err == nil && now == start {
		info.OwnerAlive = true
	}
	return info, true
}

// List returns the labs that have a state directory in StateRoot, sorted by name.
func List() ([]Info, error) {
	names, err := labDirs()
	if err != nil {
		return nil, err
	}
	labs := make([]Info, 0, len(names))
	for _, name := range names {
		info, _ := readInfo(name)
		labs = append(labs, info)
	}
	return labs, nil
}

// labDirs returns the names of the lab state directories in StateRoot, sorted.
func labDirs() ([]string, error) {
	entries, err := os.ReadDir(StateRoot)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list labs in %s: %w", StateRoot, err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() && labNamePattern.MatchString(e.Name()) {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names, nil
}

// Remove tears down the lab with the given name: it kills the processes in its namespaces,
// deletes the namespaces, its bpffs directories and its state directory. Remove rejects a
// lab whose owner is running unless force is set, because the owner may be a test that
// still uses it.
func Remove(name string, force bool) error {
	if !labNamePattern.MatchString(name) {
		return fmt.Errorf("invalid lab name %q: lab names look like fl3a9c", name)
	}
	info, _ := readInfo(name)
	dir := filepath.Join(StateRoot, name)
	if _, err := os.Stat(dir); err != nil && len(info.Namespaces) == 0 {
		return fmt.Errorf("remove lab %s: no state dir %s and no namespaces: %w", name, dir,
			os.ErrNotExist)
	}
	if info.OwnerAlive && info.OwnerPID != os.Getpid() && !force {
		return fmt.Errorf("remove lab %s: its owner pid %d is running; stop that process or "+
			"force the removal", name, info.OwnerPID)
	}
	return teardown(name, func(string, ...any) {})
}

// Clean tears down every lab whose owner process is gone, including detached labs, and
// returns their names.
func Clean(logf func(format string, args ...any)) ([]string, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return reapStale(true, logf)
}

// reapStale tears down labs whose owner process is gone. Detached labs count only when
// withDetached is set. A lock file keeps two processes from tearing down one lab at once.
func reapStale(withDetached bool, logf func(format string, args ...any)) ([]string, error) {
	if err := os.MkdirAll(StateRoot, 0o755); err != nil {
		return nil, fmt.Errorf("create lab state root %s: %w", StateRoot, err)
	}
	lockPath := filepath.Join(StateRoot, ".lock")
	lock, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file %s: %w", lockPath, err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("lock %s: %w", lockPath, err)
	}

	names, err := labDirs()
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, name := range names {
		info, complete := readInfo(name)
		if !complete || info.OwnerAlive || (info.Detached && !withDetached) {
			continue
		}
		logf("lab %s: owner pid %d is gone, tearing it down", info.Name, info.OwnerPID)
		if err := teardown(info.Name, logf); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, info.Name)
	}
	return removed, errors.Join(errs...)
}

// teardown removes everything of the lab with the given name that exists on the host.
// It works from names alone, so it also cleans up after a process that crashed.
func teardown(name string, logf func(format string, args ...any)) error {
	var errs []error
	names := namespacesOf(name)
	for _, pid := range pidsInNamespaces(names) {
		logf("lab %s: kill pid %d left in its namespaces", name, pid)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
			errs = append(errs, fmt.Errorf("kill pid %d in lab %s: %w", pid, name, err))
		}
	}
	for _, ns := range names {
		if err := deleteNamespace(ns); err != nil {
			errs = append(errs, err)
		}
	}
	pinDirs, _ := filepath.Glob(filepath.Join(bpffsRoot, "ferry-lab-"+name+"-*"))
	for _, dir := range pinDirs {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("remove bpffs dir %s: %w", dir, err))
		}
	}
	// The state directory goes last: while it exists, a later New or Clean retries the rest.
	if len(errs) == 0 {
		dir := filepath.Join(StateRoot, name)
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("remove lab state dir %s: %w", dir, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tear down lab %s: %w", name, err)
	}
	return nil
}

// pidsInNamespaces returns the processes other than this one whose network namespace is one
// of the named ones, as 'ip netns pids' finds them.
func pidsInNamespaces(names []string) []int {
	type nsID struct{ dev, ino uint64 }
	ids := map[nsID]bool{}
	for _, name := range names {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(netnsDir, name), &st); err == nil {
			ids[nsID{st.Dev, st.Ino}] = true
		}
	}
	if len(ids) == 0 {
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
			continue
		}
		if ids[nsID{st.Dev, st.Ino}] {
			pids = append(pids, pid)
		}
	}
	return pids
}
