package main

import (
	"math"
	"strings"
	"testing"
)

func TestFormatValue(t *testing.T) {
	cases := []struct {
		in   float64
		want string
	}{
		{0, "0.00"},
		{0.000183, "0.00018"},
		{1.234, "1.23"},
		{12.34, "12.3"},
		{123.4, "123"},
		{9999.4, "9999"},
		{12345.6, "12,346"},
		{1234567, "1,234,567"},
		{-23456, "-23,456"},
		{math.NaN(), "n/a"},
		{math.Inf(1), "n/a"},
	}
	for _, c := range cases {
		if got := formatValue(c.in); got != c.want {
			t.Errorf("formatValue(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestFormatSummary(t *testing.T) {
	cases := []struct {
		in   summary
		want string
	}{
		{summary{N: 5, Median: 9.41, Min: 9.02, Max: 9.88}, "9.41 (9.02–9.88)"},
		{summary{N: 1, Median: 3, Min: 3, Max: 3}, "3.00"},
		{summary{N: 4, Median: 3, Min: 3, Max: 3}, "3.00"},
		{summarize(nil), "n/a"},
	}
	for _, c := range cases {
		if got := formatSummary(c.in); got != c.want {
			t.Errorf("formatSummary(%+v) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestFormatRatio(t *testing.T) {
	if got := formatRatio(summary{N: 5, Median: 1.234, Min: 1.1, Max: 1.3}); got !=
		"1.23x (1.10–1.30)" {
		t.Errorf("ratio with range = %q", got)
	}
	if got := formatRatio(summary{N: 1, Median: 0.5, Min: 0.5, Max: 0.5}); got != "0.50x" {
		t.Errorf("single ratio = %q, want 0.50x", got)
	}
	if got := formatRatio(summary{N: 1, Median: 2501, Min: 2501, Max: 2501}); got != "2501x" {
		t.Errorf("large ratio = %q, want 2501x", got)
	}
	if got := formatRatio(summary{}); got != "n/a" {
		t.Errorf("empty ratio = %q, want n/a", got)
	}
}

func TestTableMarkdown(t *testing.T) {
	tb := table{header: []string{"path", "µs"}}
	tb.addRow("same node", "12.3 (11.0–14.2)")
	tb.addRow("x")
	want := "" +
		"| path      | µs               |\n" +
		"| --------- | ---------------- |\n" +
		"| same node | 12.3 (11.0–14.2) |\n" +
		"| x         |                  |\n"
	if got := tb.markdown(); got != want {
		t.Errorf("markdown:\n%s\nwant:\n%s", got, want)
	}
}

func TestTableMarkdownMinimumWidth(t *testing.T) {
	tb := table{header: []string{"a"}}
	got := tb.markdown()
	if !strings.HasPrefix(got, "| a   |\n| --- |\n") {
		t.Errorf("one-letter column = %q, want width 3 for the rule", got)
	}
}

func TestFormatCount(t *testing.T) {
	cases := []struct {
		in   uint64
		want string
	}{{0, "0"}, {42, "42"}, {9999, "9999"}, {57812, "57,812"}, {1234567, "1,234,567"}}
	for _, c := range cases {
		if got := formatCount(c.in); got != c.want {
			t.Errorf("formatCount(%d) = %q, want %q", c.in, got, c.want)
		}
	}
}
