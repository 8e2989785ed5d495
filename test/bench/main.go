// Command bench compares ferry with the hand-wired setup it replaces, and with a ceiling of
// two namespaces joined by one veth pair, on the namespace lab of test/lab. It builds a
// baseline lab and a ferry lab at the same time and alternates the measurements between
// them round by round.
//
//	go run ./test/bench -out docs/benchmarks.md   # every case, about 10 minutes
//	go run ./test/bench -quick                     # cross-node cases, under 2 minutes
//
// The full run writes the page with every table to -out, or to stdout without -out. The
// quick run prints its table and exits with status 1 when ferry is more than 20% slower
// than the baseline on cross-node throughput or latency. Both need root and the ferry
// binaries from 'make build'.
//
// The same executable is the traffic helper that runs inside the lab's namespaces: its
// first argument is then serve, rr or crr.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

// options are the driver's flags.
type options struct {
	quick   bool
	out     string
	rounds  int
	binDir  string
	verbose bool
}

// Time limits of a whole run, after which it stops and removes its labs.
const (
	fullRunLimit  = 30 * time.Minute
	quickRunLimit = 5 * time.Minute
)

// grossRegression is how much slower than the baseline ferry may be in a quick run before
// it fails.
const grossRegression = 0.20

func main() {
	if len(os.Args) > 1 {
		if cmd, ok := helperCommands[os.Args[1]]; ok {
			log.SetPrefix("bench " + os.Args[1] + ": ")
			if err := cmd(os.Args[2:]); err != nil {
				log.Print(err)
				os.Exit(1)
			}
			return
		}
	}

	var o options
	flag.BoolVar(&o.quick, "quick", false, "run the cross-node cases only and fail on a "+
		"gross regression")
	flag.StringVar(&o.out, "out", "", "file to write the Markdown page to; stdout when empty")
	flag.IntVar(&o.rounds, "rounds", 0, "rounds of every case (default 7, or 3 with -quick)")
	flag.StringVar(&o.binDir, "bin", "bin", "directory with the ferry, ferryd and ferryctl "+
		"binaries")
	flag.BoolVar(&o.verbose, "v", false, "print every lab setup and teardown step")
	flag.Parse()
	if o.rounds == 0 {
		o.rounds = 7
		if o.quick {
			o.rounds = 3
		}
	}
	if o.rounds < 1 || o.rounds > 50 {
		fmt.Fprintf(os.Stderr, "bench: invalid -rounds %d: use 1 to 50\n", o.rounds)
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: the lab uses network namespaces and BPF, which needs "+
			"root; run the bench as root")
		os.Exit(2)
	}
	os.Exit(run(o))
}

// run returns the exit status: 0 on success, 1 on an error or, with -quick, a gross
// regression.
func run(o options) int {
	limit := fullRunLimit
	if o.quick {
		limit = quickRunLimit
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	started := time.Now()

	e, err := newEnv(o)
	if err != nil {
		log.Printf("bench: %v", err)
		return 1
	}
	machine := readMachine(ctx)
	defer e.close()
	log.Printf("bench: setting up the baseline lab, the ferry lab and the ceiling")
	if err := setupEnv(ctx, e); err != nil {
		log.Printf("bench: %v", err)
		return 1
	}

	b := &bench{env: e, res: newResults(), d: fullDurations, rounds: o.rounds}
	if err := b.warmUp(ctx, o.quick); err != nil {
		log.Printf("bench: %v", err)
		return 1
	}
	for round := range o.rounds {
		log.Printf("bench: round %d of %d", round+1, o.rounds)
		if o.quick {
			b.runQuickRound(ctx, round)
			continue
		}
		if err := b.runRound(ctx, round); err != nil {
			log.Printf("bench: round %d: %v", round+1, err)
			return 1
		}
		if ctx.Err() != nil {
			log.Printf("bench: stopped: %v", ctx.Err())
			return 1
		}
	}

	if o.quick {
		return finishQuick(b.res, o.out)
	}
	p := page{machine: machine, rounds: o.rounds, d: b.d}
	if err := b.runAfterRounds(ctx, &p); err != nil {
		log.Printf("bench: %v", err)
		return 1
	}
	p.machine.loadEnd = loadAverage()
	p.elapsed = time.Since(started).Round(time.Second).String()
	if err := writeOutput(o.out, renderPage(b.res, p)); err != nil {
		log.Printf("bench: %v", err)
		return 1
	}
	return 0
}

// runAfterRounds runs the cases that need no rounds: the evidence per path, CNI ADD and
// DEL, and ferryd's memory.
func (b *bench) runAfterRounds(ctx context.Context, p *page) error {
	if err := b.recordFerrydPeak(); err != nil {
		return err
	}
	log.Printf("bench: counting what ferry's programs do per request")
	ev, err := b.collectEvidence(ctx)
	if err != nil {
		log.Printf("bench: %v", err)
		b.res.notes = append(b.res.notes, err.Error())
	}
	p.evidence = ev
	if p.uplinkMTU, err = uplinkMTU(b.ferry.lab.Node("worker-0")); err != nil {
		return err
	}
	log.Printf("bench: CNI ADD and DEL of %d pods per plugin", cniPods)
	if err := b.runCNI(ctx); err != nil {
		return err
	}
	if err := b.runPodAttach(); err != nil {
		return err
	}
	if err := b.runPluginStart(ctx); err != nil {
		return err
	}
	log.Printf("bench: ferryd memory with 3, 1,003 and 5,003 nodes, static and from Kubernetes")
	return b.runFerrydMemory(ctx)
}

// finishQuick prints the quick run's table and returns 1 on a gross regression.
func finishQuick(r *results, out string) int {
	text := renderQuick(r)
	fmt.Print(text)
	if out != "" {
		if err := writeOutput(out, text); err != nil {
			log.Printf("bench: %v", err)
			return 1
		}
	}
	problems := quickRegressions(r)
	for _, p := range problems {
		fmt.Fprintln(os.Stderr, "bench: regression: "+p)
	}
	if len(problems) > 0 {
		return 1
	}
	fmt.Println("no gross regression: ferry is within 20% of the baseline or better")
	return 0
}

// quickRegressions returns a sentence for each cross-node figure on which ferry is more
// than grossRegression slower than the baseline, or that the run could not measure.
func quickRegressions(r *results) []string {
	var problems []string
	tput := r.ratio(kindThroughput, pathCrossNode, cfgFerry, pathCrossNode, cfgBaseline)
	if tput.N == 0 {
		problems = append(problems, "cross-node throughput was not measured")
	} else if tput.Median < 1-grossRegression {
		problems = append(problems, fmt.Sprintf("cross-node throughput is %s of the "+
			"baseline's, below %.2fx", formatRatio(tput), 1-grossRegression))
	}
	for _, kind := range []string{kindTCPP50, kindUDPP50} {
		lat := r.ratio(kind, pathCrossNode, cfgFerry, pathCrossNode, cfgBaseline)
		if lat.N == 0 {
			problems = append(problems, "cross-node "+kind+" was not measured")
		} else if lat.Median > 1+grossRegression {
			problems = append(problems, fmt.Sprintf("cross-node %s is %s of the baseline's, "+
				"above %.2fx", kind, formatRatio(lat), 1+grossRegression))
		}
	}
	return problems
}

func writeOutput(path, text string) error {
	if path == "" {
		fmt.Print(text)
		return nil
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return fmt.Errorf("write page %s: %w", path, err)
	}
	log.Printf("bench: wrote %s", path)
	return nil
}

// newEnv checks the tools and binaries that the run needs.
func newEnv(o options) (*env, error) {
	exe, err := helperPath()
	if err != nil {
		return nil, err
	}
	binDir, err := filepath.Abs(o.binDir)
	if err != nil {
		return nil, fmt.Errorf("resolve -bin %s: %w", o.binDir, err)
	}
	for _, name := range []string{"ferry", "ferryd", "ferryctl"} {
		if _, err := os.Stat(filepath.Join(binDir, name)); err != nil {
			return nil, fmt.Errorf("find %s in %s: %w; run 'make build' or set -bin", name,
				binDir, err)
		}
	}
	for _, tool := range []string{"iperf3", "nsenter", "ip", "iptables", "timeout"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("find %s: %w; run 'make deps'", tool, err)
		}
	}
	e := &env{exe: exe, binDir: binDir, logf: func(string, ...any) {}}
	if o.verbose {
		e.logf = log.Printf
	}
	return e, nil
}
