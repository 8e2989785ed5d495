package main

import (
	"strings"
	"testing"
)

func TestGoalsWithoutResults(t *testing.T) {
	for _, g := range goals(newResults()) {
		if v := verdict(g); v != "not measured" {
			t.Errorf("goal %q without results: verdict %q, want not measured", g.name, v)
		}
	}
}

func TestGoalsCrossNodeThroughput(t *testing.T) {
	r := newResults()
	for i := range 3 {
		r.set(kindThroughput, pathCrossNode, cfgBaseline, i, 10)
		r.set(kindThroughput, pathCrossNode, cfgFerry, i, 13)
		r.set(kindThroughput, pathCeiling, cfgCeiling, i, 20)
	}
	got := map[string]string{}
	for _, g := range goals(r) {
		got[g.name] = verdict(g)
	}
	if v := got["cross-node TCP throughput ≥ 1.2x baseline"]; v != "met" {
		t.Errorf("1.3x the baseline: verdict %q, want met", v)
	}
	if v := got["cross-node TCP throughput ≥ 0.8x ceiling"]; v != "not met" {
		t.Errorf("0.65x the ceiling: verdict %q, want not met", v)
	}
}

func TestQuickRegressions(t *testing.T) {
	r := newResults()
	for i := range 3 {
		r.set(kindThroughput, pathCrossNode, cfgBaseline, i, 10)
		r.set(kindThroughput, pathCrossNode, cfgFerry, i, 8.5)
		r.set(kindTCPP50, pathCrossNode, cfgBaseline, i, 20)
		r.set(kindTCPP50, pathCrossNode, cfgFerry, i, 25)
		r.set(kindUDPP50, pathCrossNode, cfgBaseline, i, 20)
		r.set(kindUDPP50, pathCrossNode, cfgFerry, i, 23)
	}
	problems := quickRegressions(r)
	if len(problems) != 1 {
		t.Fatalf("problems = %q, want one: TCP p50 at 1.25x", problems)
	}
	if !strings.Contains(problems[0], kindTCPP50) {
		t.Errorf("problem %q does not name %q", problems[0], kindTCPP50)
	}
}

func TestQuickRegressionsMissing(t *testing.T) {
	if got := quickRegressions(newResults()); len(got) != 3 {
		t.Errorf("problems without results = %q, want 3", got)
	}
}

func TestThroughputBoundFromCeiling(t *testing.T) {
	r := newResults()
	for i := range 3 {
		r.set(kindThroughput, pathCrossNode, cfgBaseline, i, 8)
		r.set(kindThroughput, pathCeiling, cfgCeiling, i, 10)
	}
	got := throughputBound(r)
	if !strings.Contains(got, "0.80x") {
		t.Errorf("bound %q does not give the baseline at 0.80x of the ceiling", got)
	}
	if !strings.Contains(got, "1.25x") {
		t.Errorf("bound %q does not give 1.25x as the reachable ratio", got)
	}
}

func TestFindingsOnlyForMissedGoals(t *testing.T) {
	r := newResults()
	for i := range 3 {
		r.set(kindConnRate, pathMasquerade, cfgBaseline, i, 100)
		r.set(kindConnRate, pathMasquerade, cfgFerry, i, 110)
	}
	var b strings.Builder
	writeFindings(&b, r, page{})
	if strings.Contains(b.String(), "**Connection rate.**") {
		t.Errorf("findings explain the connection rate, which met its target:\n%s", b.String())
	}
	for i := range 3 {
		r.set(kindConnRate, pathMasquerade, cfgFerry, i, 90)
	}
	b.Reset()
	writeFindings(&b, r, page{})
	if !strings.Contains(b.String(), "**Connection rate.**") {
		t.Errorf("findings lack the connection rate at 0.90x:\n%s", b.String())
	}
}
