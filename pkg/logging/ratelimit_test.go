package logging

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// newTestLogger returns a logger through a RateLimited handler whose clock
// the test moves with the returned function.
func newTestLogger(burst int, interval time.Duration) (*slog.Logger, *bytes.Buffer,
	func(time.Duration)) {
	var buf bytes.Buffer
	text := slog.NewTextHandler(&buf, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
	h := NewRateLimited(text, burst, interval)
	now := time.Unix(1000, 0)
	h.state.now = func() time.Time { return now }
	return slog.New(h), &buf, func(d time.Duration) { now = now.Add(d) }
}

func lines(buf *bytes.Buffer) []string {
	return strings.Split(strings.TrimSpace(buf.String()), "\n")
}

func TestRateLimitedDropsRepeats(t *testing.T) {
	log, buf, _ := newTestLogger(2, time.Minute)
	for range 5 {
		log.Error("expire NAT flows failed", "error", "map busy")
	}
	if got := lines(buf); len(got) != 2 {
		t.Errorf("logged %d lines, want 2:\n%s", len(got), buf)
	}
}

func TestRateLimitedReportsSuppressed(t *testing.T) {
	log, buf, advance := newTestLogger(1, time.Minute)
	for range 4 {
		log.Warn("node skipped", "node", "worker-1")
	}
	advance(time.Minute)
	log.Warn("node skipped", "node", "worker-1")
	got := lines(buf)
	if len(got) != 2 {
		t.Fatalf("logged %d lines, want 2:\n%s", len(got), buf)
	}
	if !strings.Contains(got[1], "suppressed=3") {
		t.Errorf("second line does not report 3 suppressed repeats: %s", got[1])
	}
	if strings.Contains(got[0], "suppressed") {
		t.Errorf("first line reports suppressed repeats: %s", got[0])
	}
}

func TestRateLimitedKeysByID(t *testing.T) {
	log, buf, _ := newTestLogger(1, time.Minute)
	log.Info("node added", "node", "worker-1", "cidr", "10.200.1.0/24")
	log.Info("node added", "node", "worker-2", "cidr", "10.200.2.0/24")
	log.With("node", "worker-3").Info("node added")
	log.With("node", "worker-3").Info("node added")
	if got := lines(buf); len(got) != 3 {
		t.Errorf("logged %d lines, want one per node:\n%s", len(got), buf)
	}
}

func TestRateLimitedIgnoresOtherAttrs(t *testing.T) {
	log, buf, _ := newTestLogger(1, time.Minute)
	log.Error("expire NAT flows failed", "expired", 1, "error", "a")
	log.Error("expire NAT flows failed", "expired", 2, "error", "b")
	if got := lines(buf); len(got) != 1 {
		t.Errorf("logged %d lines, want 1: counts and errors are not ids:\n%s", len(got), buf)
	}
}
