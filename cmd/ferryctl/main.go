// Command ferryctl shows the state of a node's ferry dataplane from the maps
// that ferryd pinned: node settings, node routes, local endpoints, the NAT
// table and the packet counters, as tables or JSON.
//
// Interface names are resolved in the network namespace ferryctl runs in;
// run it in the node's namespace to see them.
//
// Exit status: 0 on success, 1 when the dataplane is not loaded or a map
// cannot be read, 2 for an invalid command line.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"github.com/ferrynet/ferry/pkg/datapath"
)

const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

const defaultBPFFSDir = "/sys/fs/bpf/ferry"

// command is a subcommand: it reads the maps and returns a view to print.
type command struct {
	summary string
	view    func(m *datapath.Maps, dir string) (view, error)
}

var commands = map[string]command{
	"status":    {"node settings, hooks, map fill levels, counters and ferryd's state", statusView},
	"routes":    {"remote nodes' pod CIDRs and node IPs", routesView},
	"endpoints": {"pods on this node with their interfaces and MAC addresses", endpointsView},
	"nat":       {"masqueraded flows of the NAT table, or one pod's with --pod IP", allNATView},
	"stats":     {"packet and byte counters per reason; drops are marked", statsView},
}

var commandOrder = []string{"status", "routes", "endpoints", "nat", "stats"}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("ferryctl", flag.ContinueOnError)
	flags.SetOutput(stderr)
	dir := flags.String("bpffs-dir", defaultBPFFSDir, "bpffs `directory` where ferryd pinned "+
		"the dataplane (the bpffsDir of its config)")
	format := flags.String("o", "table", "output `format`: table or json")
	pod := flags.String("pod", "", "with nat: list only the flows of the pod with this `IP`")
	flags.StringVar(&metricsAddress, "metrics-address", defaultMetricsAddress, "with status: "+
		"the `host:port` of ferryd's metrics listener (its metricsAddress) to read its "+
		"readiness, reloads and nodes from; empty to skip")
	flags.Usage = func() { usage(flags, stderr) }

	// Options may come before or after the command.
	if err := flags.Parse(args); err != nil {
		return parseErrorStatus(err)
	}
	if flags.NArg() == 0 {
		fmt.Fprintln(stderr, "ferryctl: missing command: use one of "+
			strings.Join(commandOrder, ", "))
		return exitUsage
	}
	name := flags.Arg(0)
	if err := flags.Parse(flags.Args()[1:]); err != nil {
		return parseErrorStatus(err)
	}
	if flags.NArg() > 0 {
		fmt.Fprintf(stderr, "ferryctl: unexpected argument %q after %s\n", flags.Arg(0), name)
		return exitUsage
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "ferryctl: unknown command %q: use one of %s\n", name,
			strings.Join(commandOrder, ", "))
		return exitUsage
	}
	if *format != "table" && *format != "json" {
		fmt.Fprintf(stderr, "ferryctl: invalid output format %q: use table or json\n", *format)
		return exitUsage
	}
	if *pod != "" {
		addr, err := netip.ParseAddr(*pod)
		if err != nil || !addr.Is4() || name != "nat" {
			fmt.Fprintf(stderr, "ferryctl: invalid --pod %q: use it with nat and a pod's "+
				"IPv4 address, such as --pod 10.200.0.5\n", *pod)
			return exitUsage
		}
		cmd.view = func(m *datapath.Maps, _ string) (view, error) { return natView(m, addr) }
	}

	m, err := datapath.OpenMaps(*dir)
	if err != nil {
		fmt.Fprintf(stderr, "ferryctl: %s\n", explainOpenError(err, *dir))
		return exitFailure
	}
	defer m.Close()

	v, err := cmd.view(m, *dir)
	if errors.Is(err, datapath.ErrNotLoaded) {
		fmt.Fprintf(stderr, "ferryctl: ferry dataplane is not configured under %s: "+
			"ferryd has not finished starting; check its log\n", *dir)
		return exitFailure
	}
	if err != nil {
		fmt.Fprintf(stderr, "ferryctl: %s: %v\n", name, err)
		return exitFailure
	}
	if *format == "json" {
		err = v.writeJSON(stdout)
	} else {
		err = v.writeTable(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "ferryctl: write output: %v\n", err)
		return exitFailure
	}
	return exitOK
}

func explainOpenError(err error, dir string) string {
	switch {
	case errors.Is(err, datapath.ErrNotLoaded):
		return fmt.Sprintf("ferry dataplane is not loaded under %s: start ferryd, "+
			"or pass the bpffsDir of its config with --bpffs-dir", dir)
	case errors.Is(err, os.ErrPermission):
		return fmt.Sprintf("open maps under %s: %v: run ferryctl as root", dir, err)
	default:
		return fmt.Sprintf("open maps under %s: %v", dir, err)
	}
}

func parseErrorStatus(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	return exitUsage
}

func usage(flags *flag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, "Usage: ferryctl [--bpffs-dir DIR] [-o table|json] [--pod IP] COMMAND\n\n"+
		"Commands:\n")
	for _, name := range commandOrder {
		fmt.Fprintf(w, "  %-10s %s\n", name, commands[name].summary)
	}
	fmt.Fprintf(w, "\nOptions:\n")
	flags.PrintDefaults()
}
