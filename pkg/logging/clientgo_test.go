package logging

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestRaiseClientGoWarnings(t *testing.T) {
	var buf bytes.Buffer
	text := slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})
	log := slog.New(RaiseClientGoWarnings(text))

	log.Info("Warning: watch ended with error", "err", "connection refused")
	log.Info("Caches populated")
	log.Debug("Warning: at a debug level stays there")

	out := buf.String()
	if !strings.Contains(out, `level=WARN msg="Warning: watch ended with error"`) {
		t.Errorf("client-go's warning not logged at WARN:\n%s", out)
	}
	if strings.Contains(out, "Caches populated") {
		t.Errorf("an info record passed a WARN threshold:\n%s", out)
	}
	if strings.Contains(out, "debug level") {
		t.Errorf("a debug record passed a WARN threshold:\n%s", out)
	}
}
