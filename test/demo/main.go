// Command demo builds a lab cluster network, sets up one dataplane on it, runs the
// dataplane checks, prints them and removes the lab. It exits with status 1 if a check
// fails.
//
//	go run ./test/demo -mode baseline
//
// It needs root, because the lab creates network namespaces.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/ferrynet/ferry/test/lab"
)

// binDir is the directory with ferry's binaries, set by -bin.
var binDir string

// modes maps each -mode value to its dataplane. A new mode adds an entry here.
var modes = map[string]func() lab.Dataplane{
	"baseline": func() lab.Dataplane { return lab.Baseline(lab.DefaultClusterCIDR) },
	"ferry": func() lab.Dataplane {
		// worker-0 and worker-1 share a subnet and need no cloud routes; worker-2 talks
		// to worker-0 across subnets, through routes of the vpc router.
		return lab.Ferry(lab.FerryOptions{
			BinDir:      binDir,
			CloudRoutes: []string{"worker-0", "worker-2"},
		})
	},
}

func main() {
	names := make([]string, 0, len(modes))
	for name := range modes {
		names = append(names, name)
	}
	slices.Sort(names)

	mode := flag.String("mode", "ferry", "dataplane to demonstrate: "+
		strings.Join(names, ", "))
	flag.StringVar(&binDir, "bin", "bin", "directory with the ferry, ferryd and ferryctl "+
		"binaries (ferry mode)")
	verbose := flag.Bool("v", false, "print each lab setup and teardown step to stderr")
	flag.Parse()

	if abs, err := filepath.Abs(binDir); err == nil {
		binDir = abs
	}
	newDataplane, ok := modes[*mode]
	if !ok {
		fmt.Fprintf(os.Stderr, "demo: unknown mode %q: use one of %s\n", *mode,
			strings.Join(names, ", "))
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: the lab uses network namespaces, which needs root; "+
			"run the demo as root")
		os.Exit(2)
	}
	os.Exit(run(newDataplane(), *verbose))
}

// run returns the exit status: 0 when every check passed, 1 otherwise.
func run(dp lab.Dataplane, verbose bool) int {
	// SIGINT or SIGTERM cancels the commands in flight, and the lab is removed below.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	opts := lab.Options{
		Nodes:      lab.CheckNodes(),
		CNIBinDirs: append(slices.Clone(dp.CNIBinDirs), "/usr/lib/cni"),
	}
	if verbose {
		opts.Logf = func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, format+"\n", args...)
		}
	}
	l, err := lab.New(ctx, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		return 1
	}
	defer func() {
		if err := l.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		}
	}()

	fmt.Printf("ferry demo, mode %s, lab %s\n", dp.Name, l.Name)
	for _, n := range l.Nodes {
		fmt.Printf("  node %-9s %-10v pods %v\n", n.Name, n.IP, n.PodCIDR)
	}
	fmt.Println()
	if err := dp.Setup(ctx, l); err != nil {
		fmt.Fprintf(os.Stderr, "demo: set up %s: %v\n", dp.Name, err)
		return 1
	}

	results := lab.RunChecks(ctx, l, lab.CheckEnv{Conflist: dp.Conflist}, os.Stdout)
	if dp.Describe != nil {
		fmt.Println()
		dp.Describe(ctx, l, os.Stdout)
	}
	for _, r := range results {
		if !r.Passed {
			return 1
		}
	}
	return 0
}
