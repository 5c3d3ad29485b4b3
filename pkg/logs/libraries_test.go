package logs_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"

	"go.uber.org/zap"

	"github.com/rollcall/rollcall/pkg/logs"
)

// The etcd client's zap entries at the chosen level and above become slog
// records, fields and all; those below are dropped.
func TestZapEntriesBecomeSlogRecords(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	z := logs.Zap(log, zap.ErrorLevel).Named("etcd-client").With(zap.String("endpoint", "127.0.0.1:2379"))
	z.Warn("retrying of unary invoker failed", zap.Int("attempt", 0))
	z.Error("getToken failed", zap.Error(errors.New("authentication failed")))

	var got []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("record %q: %v", line, err)
		}
		got = append(got, rec)
	}
	if len(got) != 1 {
		t.Fatalf("%d records, want only the error: %s", len(got), buf.String())
	}
	want := map[string]any{"level": "ERROR", "msg": "getToken failed", "logger": "etcd-client",
		"endpoint": "127.0.0.1:2379", "error": "authentication failed"}
	for k, v := range want {
		if got[0][k] != v {
			t.Errorf("record %v: %s = %v, want %v", got[0], k, got[0][k], v)
		}
	}
}
