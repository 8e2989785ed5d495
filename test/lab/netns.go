package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Namespace is a named network namespace of a lab, bind-mounted at /run/netns/<NSName>.
type Namespace struct {
	// NSName is the name that 'ip netns' shows, for example "fl3a9c-worker-0".
	NSName string
	// NSPath is the bind mount of the namespace, /run/netns/<NSName>.
	NSPath string

	lab *Lab
}

// newNamespace creates the namespace <lab>-<suffix> with lo up.
func (l *Lab) newNamespace(ctx context.Context, suffix string) (*Namespace, error) {
	name := l.Name + "-" + suffix
	out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("create namespace %s with 'ip netns add': %w%s",
			name, err, outputSuffix(out))
	}
	n := &Namespace{NSName: name, NSPath: filepath.Join(netnsDir, name), lab: l}
	l.logf("lab %s: created namespace %s", l.Name, name)

	err = n.withHandle(func(h *netlink.Handle) error { return setUp(h, "lo") })
	if err != nil {
		return nil, err
	}
	return n, nil
}

func (n *Namespace) String() string { return n.NSName }

// Run runs a command inside the namespace with 'nsenter --net' and returns its combined
// stdout and stderr. Unlike 'ip netns exec', nsenter keeps the host's /sys mount, so
// /sys/fs/bpf stays visible to the command.
func (n *Namespace) Run(ctx context.Context, args ...string) (string, error) {
	if len(args) == 0 {
		return "", fmt.Errorf("run in %s: missing command", n.NSName)
	}
	cmd := exec.CommandContext(ctx, "nsenter", n.nsenterArgs(args)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("run %q in %s: %w%s", strings.Join(args, " "),
			n.NSName, err, outputSuffix(out))
	}
	return string(out), nil
}

// outputSuffix returns ": <output>" for a failed command's output, or "" if it printed
// nothing.
func outputSuffix(out []byte) string {
	if s := strings.TrimSpace(string(out)); s != "" {
		return ": " + s
	}
	return ""
}

func (n *Namespace) nsenterArgs(args []string) []string {
	return append([]string{"--net=" + n.NSPath, "--"}, args...)
}

// Do runs fn on an OS thread that has entered the namespace, and moves the thread back
// afterwards. Sockets that fn creates belong to the namespace, and processes that fn starts
// run in it. Goroutines that fn starts run on other threads, outside the namespace.
func (n *Namespace) Do(fn func() error) error {
	return ns.WithNetNSPath(n.NSPath, func(ns.NetNS) error { return fn() })
}

// Listen opens a TCP listener on addr in the namespace. Connections to it come from the
// namespace, such as from a process that runs there.
func (n *Namespace) Listen(addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s in %s: %w", addr, n, err)
	}
	return l, nil
}

// withHandle runs fn with a netlink handle whose sockets live in the namespace.
func (n *Namespace) withHandle(fn func(h *netlink.Handle) error) error {
	fd, err := netns.GetFromPath(n.NSPath)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", n.NSPath, err)
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		return fmt.Errorf("open netlink socket in %s: %w", n.NSName, err)
	}
	defer h.Close()
	return fn(h)
}

// setSysctls writes values under /proc/sys from inside the namespace. Keys are paths
// relative to /proc/sys, such as "net/ipv4/ip_forward".
func (n *Namespace) setSysctls(values [][2]string) error {
	return n.Do(func() error {
		for _, kv := range values {
			path := filepath.Join("/proc/sys", kv[0])
			if err := os.WriteFile(path, []byte(kv[1]), 0o644); err != nil {
				return fmt.Errorf("set sysctl %s=%s in %s: %w", kv[0], kv[1], n.NSName, err)
			}
		}
		return nil
	})
}

// setSysctlsIfPresent is setSysctls for keys that exist only with some kernel options, such
// as net/bridge, and skips the keys that the kernel does not have.
func (n *Namespace) setSysctlsIfPresent(values [][2]string) error {
	return n.Do(func() error {
		for _, kv := range values {
			path := filepath.Join("/proc/sys", kv[0])
			err := os.WriteFile(path, []byte(kv[1]), 0o644)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("set sysctl %s=%s in %s: %w", kv[0], kv[1], n.NSName, err)
			}
		}
		return nil
	})
}

func setUp(h *netlink.Handle, name string) error {
	link, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find link %s: %w", name, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set link %s up: %w", name, err)
	}
	return nil
}

// namespacesOf returns the names in /run/netns that belong to the lab with the given name.
func namespacesOf(lab string) []string {
	entries, err := os.ReadDir(netnsDir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), lab+"-") {
			names = append(names, e.Name())
		}
	}
	return names
}

// deleteNamespace removes the bind mount of a named namespace, as 'ip netns delete' does.
// The kernel frees the namespace once no process, socket or mount refers to it any more.
func deleteNamespace(name string) error {
	path := filepath.Join(netnsDir, name)
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount namespace %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove namespace file %s: %w", path, err)
	}
	return nil
}
