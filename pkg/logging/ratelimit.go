// Package logging provides the log/slog handler of ferryd that limits
// repeated records, so that an error that recurs on every NAT sweep or every
// node event does not flood the log.
package logging

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// IDKeys are the attribute keys that identify what a record is about. Two
// records are repeats when they have the same level, message and values of
// these keys, so that events of different nodes or interfaces are never
// limited against each other.
var IDKeys = []string{"node", "ifindex", "pod", "container_id", "map", "hook", "device",
	"path", "cidr"}

// maxWindows bounds the number of keys that the handler tracks. Past it,
// windows that have ended are dropped.
const maxWindows = 4096

// RateLimited is a slog.Handler that passes at most Burst repeats of a
// record per Interval to the next handler and drops the rest. The first
// record that passes after drops carries their number in the attribute
// "suppressed".
type RateLimited struct {
	next  slog.Handler
	state *limiterState
	// ids are the identifying attributes added with WithAttrs.
	ids string
}

type limiterState struct {
	mu       sync.Mutex
	burst    int
	interval time.Duration
	now      func() time.Time
	windows  map[string]*window
}

type window struct {
	start      time.Time
	passed     int
	suppressed int
}

// NewRateLimited returns a handler that passes at most burst repeats of a
// record to next in every interval.
func NewRateLimited(next slog.Handler, burst int, interval time.Duration) *RateLimited {
	return &RateLimited{next: next, state: &limiterState{
		burst:    burst,
		interval: interval,
		now:      time.Now,
		windows:  map[string]*window{},
	}}
}

// Enabled reports whether the next handler handles records of level.
func (h *RateLimited) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle passes r to the next handler unless it is a repeat over the limit.
func (h *RateLimited) Handle(ctx context.Context, r slog.Record) error {
	suppressed, pass := h.state.admit(h.key(r))
	if !pass {
		return nil
	}
	if suppressed > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", suppressed))
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs returns a handler whose records carry attrs.
func (h *RateLimited) WithAttrs(attrs []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.ids)
	for _, a := range attrs {
		writeID(&b, a)
	}
	return &RateLimited{next: h.next.WithAttrs(attrs), state: h.state, ids: b.String()}
}

// WithGroup returns a handler that puts later attributes in the group name.
func (h *RateLimited) WithGroup(name string) slog.Handler {
	return &RateLimited{next: h.next.WithGroup(name), state: h.state, ids: h.ids}
}

func (h *RateLimited) key(r slog.Record) string {
	var b strings.Builder
	b.WriteString(r.Level.String())
	b.WriteByte(0)
	b.WriteString(r.Message)
	b.WriteString(h.ids)
	r.Attrs(func(a slog.Attr) bool {
		writeID(&b, a)
		return true
	})
	return b.String()
}

func writeID(b *strings.Builder, a slog.Attr) {
	for _, k := range IDKeys {
		if a.Key == k {
			b.WriteByte(0)
			b.WriteString(k)
			b.WriteByte('=')
			b.WriteString(a.Value.String())
			return
		}
	}
}

// admit counts a record of key and reports whether it passes, with the
// number of repeats that were dropped since the last one passed.
func (s *limiterState) admit(key string) (suppressed int, pass bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	w, ok := s.windows[key]
	if !ok || now.Sub(w.start) >= s.interval {
		if !ok && len(s.windows) >= maxWindows {
			s.dropEnded(now)
		}
		carried := 0
		if ok {
			carried = w.suppressed
		}
		w = &window{start: now, suppressed: carried}
		s.windows[key] = w
	}
	if w.passed >= s.burst {
		w.suppressed++
		return 0, false
	}
	w.passed++
	suppressed, w.suppressed = w.suppressed, 0
	return suppressed, true
}

func (s *limiterState) dropEnded(now time.Time) {
	for k, w := range s.windows {
		if now.Sub(w.start) >= s.interval {
			delete(s.windows, k)
		}
	}
}
