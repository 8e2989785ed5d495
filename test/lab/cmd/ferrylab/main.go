// Command ferrylab brings a lab network up for manual work, and removes labs.
//
//	ferrylab up [-baseline] [-wait] [-v]   build a three-node lab and print its namespaces
//	ferrylab down [-force] [NAME]          remove lab NAME, or every detached lab
//	ferrylab clean                         remove every lab whose owner process is gone
//	ferrylab list                          list the labs on this host
//
// It needs root, because it creates network namespaces.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/ferrynet/ferry/test/lab"
)

const usage = `usage:
  ferrylab up [-baseline] [-wait] [-v]   build a three-node lab and print its namespaces
  ferrylab down [-force] [NAME]          remove lab NAME, or every detached lab
  ferrylab clean                         remove every lab whose owner process is gone
  ferrylab list                          list the labs on this host
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	if cmd != "list" && !strings.HasPrefix(cmd, "-") && cmd != "help" && os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "ferrylab: labs use network namespaces, which needs root; "+
			"run ferrylab as root")
		os.Exit(1)
	}
	var err error
	switch cmd {
	case "up":
		err = up(args)
	case "down":
		err = down(args)
	case "clean":
		err = clean(args)
	case "list":
		err = list(args)
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
		return
	default:
		err = fmt.Errorf("unknown command %q: use up, down, clean or list", cmd)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ferrylab: %v\n", err)
		os.Exit(1)
	}
}

func up(args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	baseline := fs.Bool("baseline", false,
		"network the nodes with the hand-wired baseline and add pod-a, pod-b and pod-c")
	wait := fs.Bool("wait", false,
		"stay in the foreground and remove the lab on SIGINT or SIGTERM; without it the "+
			"lab stays after ferrylab exits, until 'ferrylab down'")
	verbose := fs.Bool("v", false, "print each setup step to stderr")
	fs.Parse(args)
	if fs.NArg() > 0 {
		return fmt.Errorf("up: unexpected arguments %v", fs.Args())
	}

	// A signal during setup cancels it, and New or the code below removes what was built.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	opts := lab.Options{Nodes: lab.CheckNodes(), Detached: !*wait}
	if *verbose {
		opts.Logf = func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, format+"\n", args...)
		}
	}
	l, err := lab.New(ctx, opts)
	if err != nil {
		return err
	}
	if *baseline {
		if err := setUpBaseline(ctx, l); err != nil {
			return errors.Join(err, l.Close())
		}
	}
	if ctx.Err() != nil {
		return errors.Join(fmt.Errorf("up: interrupted"), l.Close())
	}

	printLab(os.Stdout, l)
	if !*wait {
		fmt.Printf("remove it with: ferrylab down %s\n", l.Name)
		return nil
	}
	fmt.Println("press Ctrl-C to remove the lab")
	<-ctx.Done()
	return l.Close()
}

func setUpBaseline(ctx context.Context, l *lab.Lab) error {
	dp := lab.Baseline(lab.DefaultClusterCIDR)
	if err := dp.Setup(ctx, l); err != nil {
		return err
	}
	_, err := lab.AddCheckPods(ctx, l, lab.CheckEnv{Conflist: dp.Conflist})
	return err
}

func printLab(w io.Writer, l *lab.Lab) {
	fmt.Fprintf(w, "lab %s is up, state in %s\n\n", l.Name, l.Dir)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "namespace\trole\taddresses")
	fmt.Fprintf(tw, "%s\tvpc router\t10.0.1.1 (br0), 10.0.2.1 (br1), 198.51.100.1 (ext0), "+
		"%v (outside host)\n", l.VPC.NSName, lab.OutsideHostIP)
	fmt.Fprintf(tw, "%s\tinternet\t198.51.100.2, %v\n", l.Ext.NSName, lab.InternetIP)
	for _, n := range l.Nodes {
		fmt.Fprintf(tw, "%s\tnode %s\t%v, pods %v\n", n.NSName, n.Name, n.IP, n.PodCIDR)
	}
	for _, p := range l.Pods() {
		fmt.Fprintf(tw, "%s\tpod %s on %s\t%v\n", p.NSName, p.Name, p.Node.Name, p.IP)
	}
	tw.Flush()
	example := l.VPC.NSPath
	if pods := l.Pods(); len(pods) > 0 {
		example = pods[0].NSPath
	}
	fmt.Fprintf(w, "\nrun a command in one: nsenter --net=%s -- ip addr\n", example)
}

func down(args []string) error {
	fs := flag.NewFlagSet("down", flag.ExitOnError)
	force := fs.Bool("force", false, "remove the lab even if its owner process is running")
	fs.Parse(args)
	if fs.NArg() > 1 {
		return fmt.Errorf("down: expected at most one lab name, got %v", fs.Args())
	}
	if fs.NArg() == 1 {
		name := fs.Arg(0)
		if err := lab.Remove(name, *force); err != nil {
			return err
		}
		fmt.Printf("removed lab %s\n", name)
		return nil
	}

	labs, err := lab.List()
	if err != nil {
		return err
	}
	removed := 0
	for _, info := range labs {
		if !info.Detached || (info.OwnerAlive && !*force) {
			continue
		}
		if err := lab.Remove(info.Name, *force); err != nil {
			return err
		}
		fmt.Printf("removed lab %s\n", info.Name)
		removed++
	}
	if removed == 0 {
		fmt.Println("no detached lab to remove; 'ferrylab list' shows all labs")
	}
	return nil
}

func clean(args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("clean: unexpected arguments %v", args)
	}
	removed, err := lab.Clean(func(format string, args ...any) {
		fmt.Printf(format+"\n", args...)
	})
	if len(removed) == 0 && err == nil {
		fmt.Println("no leftover labs")
	}
	return err
}

func list(args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("list: unexpected arguments %v", args)
	}
	labs, err := lab.List()
	if err != nil {
		return err
	}
	if len(labs) == 0 {
		fmt.Println("no labs")
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "lab\towner pid\tstate\tnamespaces")
	for _, info := range labs {
		state := "owner gone"
		switch {
		case info.OwnerAlive:
			state = "owner running"
		case info.Detached:
			state = "detached"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", info.Name, info.OwnerPID, state,
			strings.Join(info.Namespaces, " "))
	}
	return tw.Flush()
}
