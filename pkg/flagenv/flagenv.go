// Package flagenv gives command-line flags environment-variable fallbacks:
// a flag not given on the command line takes its variable's value, and a
// bad value in either place is an error that names it.
package flagenv

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// Parse sets every flag of fs that is listed in env (flag name -> variable)
// from the variable when it is set, then parses args over them, so the
// command line wins; positional arguments are an error. -h prints the
// flags and their variables. getenv is os.Getenv in a program.
func Parse(fs *flag.FlagSet, env map[string]string, args []string, getenv func(string) string) error {
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage of %s:\n", fs.Name())
		fs.PrintDefaults()
		fmt.Fprintf(fs.Output(), "Environment fallbacks:\n%s", usage(env))
	}
	for name, variable := range env {
		value := getenv(variable)
		if value == "" {
			continue
		}
		if fs.Lookup(name) == nil {
			return fmt.Errorf("flagenv: no flag -%s for %s", name, variable)
		}
		if err := fs.Set(name, value); err != nil {
			return fmt.Errorf("invalid %s=%q: %w", variable, value, err)
		}
	}
	// The flag package prints the whole usage on any error; a bad value
	// should cost one line, so print usage only when asked for (-h).
	out := fs.Output()
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(out)
	if errors.Is(err, flag.ErrHelp) {
		fs.Usage()
	}
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return err
}

// usage lists the environment fallbacks for the usage message.
func usage(env map[string]string) string {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(env)) {
		fmt.Fprintf(&b, "  -%s  <- $%s\n", name, env[name])
	}
	return b.String()
}

// List is a flag.Value of comma-separated strings.
type List []string

func (l *List) String() string { return strings.Join(*l, ",") }

// Set replaces the list with value's comma-separated, trimmed, non-empty items.
func (l *List) Set(value string) error {
	*l = nil
	for item := range strings.SplitSeq(value, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*l = append(*l, item)
		}
	}
	return nil
}

// Map is a flag.Value of comma-separated key=value pairs.
type Map map[string]string

// String lists the pairs sorted by key, so that a usage's default reads
// the same on every run.
func (m *Map) String() string {
	parts := make([]string, 0, len(*m))
	for _, k := range slices.Sorted(maps.Keys(*m)) {
		parts = append(parts, k+"="+(*m)[k])
	}
	return strings.Join(parts, ",")
}

// Set replaces the map with value's pairs; an item without '=' is an error.
func (m *Map) Set(value string) error {
	out := Map{}
	for item := range strings.SplitSeq(value, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		k, v, ok := strings.Cut(item, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return fmt.Errorf("%q is not key=value", item)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	*m = out
	return nil
}
