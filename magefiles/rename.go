package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/mod/modfile"
)

// Rename changes the module-path prefix of every module (for example to github.com/you/shop) and regenerates code.
func Rename(newPrefix string) error {
	old, err := modulePrefix(".")
	if err != nil {
		return err
	}
	if err := rename(old, newPrefix); err != nil {
		return fmt.Errorf("rename %s to %s: %w", old, newPrefix, err)
	}
	return Gen()
}

// modulePrefix is the template's module-path prefix, read from the one place
// that defines it: the path of the api module minus "/api".
func modulePrefix(root string) (string, error) {
	data, err := os.ReadFile(filepath.Join(root, "api", "go.mod"))
	if err != nil {
		return "", err
	}
	path := modfile.ModulePath(data)
	prefix, ok := strings.CutSuffix(path, "/api")
	if !ok {
		return "", fmt.Errorf("api/go.mod: module path %q does not end in /api", path)
	}
	return prefix, nil
}

var validPrefix = regexp.MustCompile(`^[a-z0-9.-]+(/[A-Za-z0-9._~-]+)*$`)

// rename rewrites old to new in every source, module and doc file, skipping
// generated protobuf code (gen rewrites it) and build outputs.
func rename(old, new string) error {
	if !validPrefix.MatchString(new) || strings.HasSuffix(new, "/") {
		return fmt.Errorf("%q is not a module path prefix such as github.com/you/shop", new)
	}
	return filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "bin", "tmp", "node_modules":
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".pb.go") || !renamable(path) {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		updated := bytes.ReplaceAll(data, []byte(old), []byte(new))
		if bytes.Equal(updated, data) {
			return nil
		}
		return os.WriteFile(path, updated, 0o644)
	})
}

func renamable(path string) bool {
	switch filepath.Ext(path) {
	case ".go", ".mod", ".proto", ".md", ".yaml", ".yml", ".work":
		return true
	}
	return filepath.Base(path) == "Dockerfile"
}
