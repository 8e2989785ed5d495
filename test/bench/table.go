package main

import (
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// table is a Markdown table.
type table struct {
	header []string
	rows   [][]string
}

func (t *table) addRow(cells ...string) { t.rows = append(t.rows, cells) }

// markdown renders the table with its columns padded to equal width, so that the source
// reads as a table too. Rows shorter than the header get empty cells.
func (t *table) markdown() string {
	widths := make([]int, len(t.header))
	for i, h := range t.header {
		widths[i] = max(3, utf8.RuneCountInString(h))
	}
	for _, row := range t.rows {
		for i, c := range row {
			if i < len(widths) {
				widths[i] = max(widths[i], utf8.RuneCountInString(c))
			}
		}
	}
	var b strings.Builder
	writeRow := func(cells []string) {
		b.WriteString("|")
		for i, w := range widths {
			c := ""
			if i < len(cells) {
				c = cells[i]
			}
			b.WriteString(" " + c + strings.Repeat(" ", w-utf8.RuneCountInString(c)) + " |")
		}
		b.WriteString("\n")
	}
	writeRow(t.header)
	rule := make([]string, len(widths))
	for i, w := range widths {
		rule[i] = strings.Repeat("-", w)
	}
	writeRow(rule)
	for _, row := range t.rows {
		writeRow(row)
	}
	return b.String()
}

// formatValue prints v with about three significant digits, and thousands separated by
// commas from 10,000 on. Values below 0.01 keep two significant digits, so that a tiny
// figure does not print as zero.
func formatValue(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "n/a"
	case v != 0 && math.Abs(v) < 0.01:
		return strconv.FormatFloat(v, 'g', 2, 64)
	case math.Abs(v) >= 10000:
		return groupThousands(strconv.FormatFloat(math.Round(v), 'f', 0, 64))
	case math.Abs(v) >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func groupThousands(digits string) string {
	sign := ""
	if strings.HasPrefix(digits, "-") {
		sign, digits = "-", digits[1:]
	}
	var parts []string
	for len(digits) > 3 {
		parts = append([]string{digits[len(digits)-3:]}, parts...)
		digits = digits[:len(digits)-3]
	}
	parts = append([]string{digits}, parts...)
	return sign + strings.Join(parts, ",")
}

// formatCount prints a count with thousands separated by commas from 10,000 on, as
// formatValue does.
func formatCount(n uint64) string {
	s := strconv.FormatUint(n, 10)
	if n < 10000 {
		return s
	}
	return groupThousands(s)
}

// formatSummary prints "median (min–max)", the median alone for one value, or "n/a".
func formatSummary(s summary) string {
	if s.N == 0 {
		return "n/a"
	}
	if s.N == 1 || s.Min == s.Max {
		return formatValue(s.Median)
	}
	return formatValue(s.Median) + " (" + formatValue(s.Min) + "–" + formatValue(s.Max) + ")"
}

// formatRatio prints a summary of ratios as "1.23x (1.10–1.30)". Ratios of 100 and more
// get no decimals.
func formatRatio(s summary) string {
	if s.N == 0 {
		return "n/a"
	}
	r := func(v float64) string {
		if math.Abs(v) >= 100 {
			return formatValue(v)
		}
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	if s.N == 1 || s.Min == s.Max {
		return r(s.Median) + "x"
	}
	return r(s.Median) + "x (" + r(s.Min) + "–" + r(s.Max) + ")"
}
