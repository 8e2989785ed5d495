package main

import (
	"math"
	"testing"
)

func TestSummarizeOddCount(t *testing.T) {
	s := summarize([]float64{5, 1, 3})
	if s.N != 3 {
		t.Errorf("N = %d, want 3", s.N)
	}
	if s.Median != 3 {
		t.Errorf("median = %v, want 3", s.Median)
	}
	if s.Min != 1 || s.Max != 5 {
		t.Errorf("range = %v–%v, want 1–5", s.Min, s.Max)
	}
}

func TestSummarizeEvenCount(t *testing.T) {
	s := summarize([]float64{4, 1, 3, 2})
	if s.Median != 2.5 {
		t.Errorf("median of 1 2 3 4 = %v, want 2.5", s.Median)
	}
}

func TestSummarizeEmpty(t *testing.T) {
	s := summarize(nil)
	if s.N != 0 {
		t.Errorf("N = %d, want 0", s.N)
	}
	if !math.IsNaN(s.Median) || !math.IsNaN(s.Min) || !math.IsNaN(s.Max) {
		t.Errorf("summary of nothing = %+v, want NaN fields", s)
	}
}

func TestSummarizeKeepsInput(t *testing.T) {
	in := []float64{3, 1, 2}
	summarize(in)
	if in[0] != 3 || in[1] != 1 || in[2] != 2 {
		t.Errorf("summarize reordered its input to %v", in)
	}
}

func TestPercentile(t *testing.T) {
	values := make([]float64, 101)
	for i := range values {
		values[len(values)-1-i] = float64(i) // 100 down to 0
	}
	cases := []struct {
		p, want float64
	}{
		{0, 0}, {50, 50}, {99, 99}, {100, 100}, {-5, 0}, {120, 100},
	}
	for _, c := range cases {
		if got := percentile(values, c.p); got != c.want {
			t.Errorf("percentile(0..100, %v) = %v, want %v", c.p, got, c.want)
		}
	}
}

func TestPercentileInterpolates(t *testing.T) {
	if got := percentile([]float64{10, 20}, 25); got != 12.5 {
		t.Errorf("p25 of 10 20 = %v, want 12.5", got)
	}
	if got := percentile([]float64{7}, 99); got != 7 {
		t.Errorf("p99 of one value 7 = %v, want 7", got)
	}
	if got := percentile(nil, 50); !math.IsNaN(got) {
		t.Errorf("p50 of nothing = %v, want NaN", got)
	}
}

func TestRatiosPairByRound(t *testing.T) {
	num := []float64{2, math.NaN(), 9, 4}
	den := []float64{1, 5, 3, 0}
	got := ratios(num, den)
	want := []float64{2, 3} // round 2 lacks num, round 4 has a zero den
	if len(got) != len(want) {
		t.Fatalf("ratios = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("ratio %d = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestResultsSetPadsMissingRounds(t *testing.T) {
	r := newResults()
	r.set(kindThroughput, pathCrossNode, cfgFerry, 2, 7)
	got := r.get(kindThroughput, pathCrossNode, cfgFerry)
	if len(got) != 3 {
		t.Fatalf("values = %v, want 3 rounds", got)
	}
	if !math.IsNaN(got[0]) || !math.IsNaN(got[1]) {
		t.Errorf("rounds without a value = %v, want NaN", got[:2])
	}
	if got[2] != 7 {
		t.Errorf("round 3 = %v, want 7", got[2])
	}
	if s := r.summary(kindThroughput, pathCrossNode, cfgFerry); s.N != 1 || s.Median != 7 {
		t.Errorf("summary = %+v, want one value 7", s)
	}
}

func TestResultsRatioOfConfigs(t *testing.T) {
	r := newResults()
	for i, v := range []float64{10, 12, 8} {
		r.set(kindThroughput, pathCrossNode, cfgBaseline, i, v)
	}
	for i, v := range []float64{15, 12, 16} {
		r.set(kindThroughput, pathCrossNode, cfgFerry, i, v)
	}
	s := r.ratio(kindThroughput, pathCrossNode, cfgFerry, pathCrossNode, cfgBaseline)
	if s.Median != 1.5 || s.Min != 1 || s.Max != 2 {
		t.Errorf("ratio = %+v, want median 1.5, range 1–2", s)
	}
}
