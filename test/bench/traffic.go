package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// durations sets how long each traffic run measures.
type durations struct {
	iperf       int // seconds that iperf3 measures, after iperfOmit
	iperfOmit   int // seconds of slow start that iperf3 leaves out
	rr          time.Duration
	connections time.Duration
}

var fullDurations = durations{iperf: 2, iperfOmit: 1, rr: time.Second,
	connections: 2 * time.Second}

// runGrace is added to a run's own duration for its timeout: the start of the process in
// the namespace and, for iperf3, its control connection.
const runGrace = 15 * time.Second

// throughput runs iperf3 from the target's client to its server and returns Gbit/s
// received.
func (e *env) throughput(ctx context.Context, t target, d durations) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx,
		time.Duration(d.iperf+d.iperfOmit)*time.Second+runGrace)
	defer cancel()
	out, err := t.client.Run(ctx, "iperf3", "-c", t.server.String(),
		"-p", strconv.Itoa(iperfPort), "-t", strconv.Itoa(d.iperf),
		"-O", strconv.Itoa(d.iperfOmit), "--connect-timeout", "3000", "-J")
	var report struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if jerr := json.Unmarshal([]byte(out), &report); jerr != nil {
		if err != nil {
			return 0, fmt.Errorf("run iperf3 to %s: %w", t.server, err)
		}
		return 0, fmt.Errorf("parse iperf3 output: %w: %.200s", jerr, out)
	}
	if report.Error != "" {
		return 0, fmt.Errorf("run iperf3 to %s: %s", t.server, report.Error)
	}
	if err != nil {
		return 0, fmt.Errorf("run iperf3 to %s: %w", t.server, err)
	}
	return report.End.SumReceived.BitsPerSecond / 1e9, nil
}

// requestResponse runs the rr helper from the target's client and returns its result.
func (e *env) requestResponse(ctx context.Context, t target, proto string,
	d time.Duration) (rrResult, error) {
	var res rrResult
	err := e.runHelper(ctx, t, d, &res, []string{"taskset", "-c", rrCPU}, "rr",
		"-proto", proto, "-addr", netip.AddrPortFrom(t.server, rrPort).String(),
		"-duration", d.String(), "-warmup", strconv.Itoa(rrWarmup))
	return res, err
}

// connectionRate runs the crr helper from the target's client and returns connections
// per second.
func (e *env) connectionRate(ctx context.Context, t target, d time.Duration) (float64,
	error) {
	var res crrResult
	err := e.runHelper(ctx, t, d, &res, nil, "crr",
		"-addr", netip.AddrPortFrom(t.server, echoPort).String(), "-duration", d.String())
	if err != nil {
		return 0, err
	}
	if res.Connections == 0 {
		return 0, fmt.Errorf("open connections to %s: none succeeded, %d failed: %s",
			t.server, res.Errors, res.FirstError)
	}
	if res.Errors > 0 {
		log.Printf("bench: connections to %s: %d of %d failed, first: %s", t.server, res.Errors,
			res.Errors+res.Connections, res.FirstError)
	}
	return float64(res.Connections) / res.Seconds, nil
}

// runHelper runs this executable with args in the target's client namespace, behind the
// command prefix if there is one, and decodes the JSON line it prints into out.
func (e *env) runHelper(ctx context.Context, t target, d time.Duration, out any,
	prefix []string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, d+runGrace)
	defer cancel()
	cmd := append(append(slices.Clone(prefix), e.exe), args...)
	text, err := t.client.Run(ctx, cmd...)
	if err != nil {
		return fmt.Errorf("run %s helper to %s: %w", args[0], t.server, err)
	}
	lines := strings.Split(strings.TrimSpace(text), "\n")
	last := lines[len(lines)-1]
	if err := json.Unmarshal([]byte(last), out); err != nil {
		return fmt.Errorf("parse %s helper output: %w: %.200s", args[0], err, text)
	}
	return nil
}
