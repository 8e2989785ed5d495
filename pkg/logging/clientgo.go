package logging

import (
	"context"
	"log/slog"
	"strings"
)

// clientGoWarnings raises the records of the Kubernetes client library whose
// message starts with "Warning:" to the warn level. client-go logs such
// warnings, for example a watch of nodes that ended with an error when the
// API server went away, at its info level.
type clientGoWarnings struct {
	next slog.Handler
}

// RaiseClientGoWarnings returns a handler for client-go's records that passes
// them to next, its warnings at the warn level.
func RaiseClientGoWarnings(next slog.Handler) slog.Handler {
	return clientGoWarnings{next: next}
}

func (h clientGoWarnings) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level) ||
		level >= slog.LevelInfo && h.next.Enabled(ctx, slog.LevelWarn)
}

func (h clientGoWarnings) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn && strings.HasPrefix(r.Message, "Warning:") {
		r.Level = slog.LevelWarn
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h clientGoWarnings) WithAttrs(attrs []slog.Attr) slog.Handler {
	return clientGoWarnings{next: h.next.WithAttrs(attrs)}
}

func (h clientGoWarnings) WithGroup(name string) slog.Handler {
	return clientGoWarnings{next: h.next.WithGroup(name)}
}
