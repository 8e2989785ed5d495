package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// machineInfo describes where and when the benchmark ran.
type machineInfo struct {
	cpu       string
	cores     int
	kernel    string
	goVersion string
	iperf     string
	commit    string
	date      string
	loadStart string
	loadEnd   string
}

func readMachine(ctx context.Context) machineInfo {
	m := machineInfo{
		cpu:       cpuModel(),
		cores:     runtime.NumCPU(),
		goVersion: runtime.Version(),
		date:      time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		loadStart: loadAverage(),
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		m.kernel = unix.ByteSliceToString(uts.Release[:])
	}
	if out, err := exec.CommandContext(ctx, "iperf3", "--version").Output(); err == nil {
		m.iperf = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	if out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD").
		Output(); err == nil {
		m.commit = strings.TrimSpace(string(out))
		status, err := exec.CommandContext(ctx, "git", "status", "--porcelain",
			"--untracked-files=no").Output()
		if err == nil && len(strings.TrimSpace(string(status))) > 0 {
			m.commit += " with uncommitted changes"
		}
	}
	return m
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if name, value, ok := strings.Cut(sc.Text(), ":"); ok &&
			strings.TrimSpace(name) == "model name" {
			return strings.TrimSpace(value)
		}
	}
	return "unknown"
}

// loadAverage returns the 1, 5 and 15 minute load averages from /proc/loadavg.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	fields := strings.Fields(string(data))
	if len(fields) < 3 {
		return "unknown"
	}
	return strings.Join(fields[:3], " ")
}
