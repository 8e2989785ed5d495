package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// removeStalePins deletes the pins under dir that this version does not
// use: maps that specs do not define, programs of other names, and the
// temporary pins that an interrupted pinAtomically leaves. Links are left
// to RemoveStaleLinks, which runs once the new programs are attached.
func removeStalePins(dir string, specs ...*ebpf.CollectionSpec) ([]string, error) {
	maps := map[string]bool{}
	for name := range pinnedMapSpecs(specs) {
		maps[name] = true
	}
	progs := map[string]bool{progFromPod: true, progUplinkIngress: true, progUplinkEgress: true}

	var removed []string
	var errs []error
	remove := func(path string) {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove stale pin %s: %w", path, err))
			return
		}
		removed = append(removed, path)
	}

	top, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	for _, e := range top {
		if e.IsDir() || maps[e.Name()] {
			continue
		}
		remove(filepath.Join(dir, e.Name()))
	}
	pinned, err := os.ReadDir(filepath.Join(dir, progsDir))
	if err != nil {
		return removed, fmt.Errorf("list pinned programs: %w", err)
	}
	for _, e := range pinned {
		if !progs[e.Name()] {
			remove(filepath.Join(dir, progsDir, e.Name()))
		}
	}
	return removed, errors.Join(errs...)
}

// RemoveStaleLinks detaches and deletes the link pins under dir that no
// longer serve: pod links whose veth is gone, links of names that this
// version does not use, and temporary pins. An uplink link on another
// interface than uplinkIfIndex goes too. It returns the removed pins.
func RemoveStaleLinks(dir string, uplinkIfIndex int) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(dir, linksDir))
	if err != nil {
		return nil, fmt.Errorf("list pinned links: %w", err)
	}
	var (
		removed []string
		errs    []error
	)
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(dir, linksDir, name)
		stale, err := linkStale(path, name, uplinkIfIndex)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !stale {
			continue
		}
		if err := removeLinkPin(path); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, path)
	}
	return removed, errors.Join(errs...)
}

func linkStale(path, name string, uplinkIfIndex int) (bool, error) {
	switch {
	case strings.HasSuffix(name, "_new"):
		return true, nil
	case name == linkUplinkIngress || name == linkUplinkEgress:
		return !pinnedLinkOn(path, func(ifindex int) bool { return ifindex == uplinkIfIndex }), nil
	case strings.HasPrefix(name, podLinkPrefix):
		host := strings.TrimPrefix(name, podLinkPrefix)
		return !pinnedLinkOn(path, func(ifindex int) bool {
			l, err := netlink.LinkByIndex(ifindex)
			return err == nil && l.Attrs().Name == host
		}), nil
	default:
		return true, nil
	}
}

// pinnedLinkOn reports whether the tcx link pinned at path is attached to
// an interface that matches. The kernel detaches a tcx link from an
// interface that goes away and then reports ifindex 0.
func pinnedLinkOn(path string, match func(ifindex int) bool) bool {
	l, err := link.LoadPinnedLink(path, nil)
	if err != nil {
		return false
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return false
	}
	tcx := info.TCX()
	return tcx != nil && tcx.Ifindex != 0 && match(int(tcx.Ifindex))
}
