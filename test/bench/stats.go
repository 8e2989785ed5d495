package main

import (
	"math"
	"slices"
)

// summary describes a set of measurements: one value per round, or one per sample.
type summary struct {
	N      int
	Median float64
	Min    float64
	Max    float64
}

// summarize returns the median, minimum and maximum of values. A summary of no values has
// N 0 and NaN fields.
func summarize(values []float64) summary {
	if len(values) == 0 {
		return summary{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	return summary{
		N:      len(sorted),
		Median: percentileSorted(sorted, 50),
		Min:    sorted[0],
		Max:    sorted[len(sorted)-1],
	}
}

// percentile returns the p-th percentile (0 to 100) of values, interpolating linearly
// between the two closest ranks, or NaN for no values.
func percentile(values []float64, p float64) float64 {
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	return percentileSorted(sorted, p)
}

func percentileSorted(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	p = min(max(p, 0), 100)
	rank := p / 100 * float64(len(sorted)-1)
	lo := int(math.Floor(rank))
	hi := int(math.Ceil(rank))
	frac := rank - float64(lo)
	return sorted[lo] + (sorted[hi]-sorted[lo])*frac
}

// ratios returns num[i]/den[i] for the pairs where both exist and den[i] is not zero.
// Rounds pair a configuration's measurement with the other's from the same round, so the
// ratios cancel drift of the machine's load between rounds.
func ratios(num, den []float64) []float64 {
	var out []float64
	for i := range min(len(num), len(den)) {
		if den[i] != 0 && !math.IsNaN(num[i]) && !math.IsNaN(den[i]) {
			out = append(out, num[i]/den[i])
		}
	}
	return out
}
