package logs

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc/grpclog"
)

// SetDefault makes log the logger of the libraries a process uses too:
// slog.Default (which discovery uses when given no logger), the standard
// log package, and gRPC's own log, whose errors (all it prints by
// default) it turns into records of log. Call it first in main: gRPC reads
// its logger once, before it does anything.
func SetDefault(log *slog.Logger) {
	slog.SetDefault(log)
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, grpcErrors{log}))
}

// grpcErrors turns the lines of gRPC's error log, "<date> <time> ERROR:
// <message>", into error records.
type grpcErrors struct{ log *slog.Logger }

func (w grpcErrors) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	if _, msg, ok := strings.Cut(line, "ERROR: "); ok {
		line = msg
	}
	w.log.Error(line, "source", "grpc")
	return len(p), nil
}

// Zap returns a zap logger, for libraries that take one (etcd's client),
// whose entries at min and above become records of log, with their fields
// as attributes.
func Zap(log *slog.Logger, min zapcore.Level) *zap.Logger {
	return zap.New(zapCore{LevelEnabler: min, log: log})
}

type zapCore struct {
	zapcore.LevelEnabler
	log    *slog.Logger
	fields []zapcore.Field
}

func (c zapCore) With(fields []zapcore.Field) zapcore.Core {
	c.fields = append(slices.Clip(c.fields), fields...)
	return c
}

func (c zapCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c zapCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range append(slices.Clip(c.fields), fields...) {
		f.AddTo(enc)
	}
	attrs := make([]any, 0, 2+2*len(enc.Fields))
	if e.LoggerName != "" {
		attrs = append(attrs, "logger", e.LoggerName)
	}
	for _, k := range slices.Sorted(maps.Keys(enc.Fields)) {
		attrs = append(attrs, k, enc.Fields[k])
	}
	c.log.Log(context.Background(), slogLevel(e.Level), e.Message, attrs...)
	return nil
}

func (zapCore) Sync() error { return nil }

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	}
	return slog.LevelError
}
