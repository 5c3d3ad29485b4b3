package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// template is the service that `new` copies.
const template = "greeter"

var serviceNameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,30}$`)

// New copies services/greeter, its API and its image recipe into a new service NAME (own proto package, module, wire set), adds it to go.work and regenerates.
func New(name string) error {
	if !serviceNameRE.MatchString(name) {
		return fmt.Errorf("invalid service name %q: want a lower-case letter, then up to 30 lower-case letters or digits", name)
	}
	for _, dir := range []string{filepath.Join("services", name), filepath.Join("api", name)} {
		if _, err := os.Stat(dir); err == nil {
			return fmt.Errorf("%s already exists", dir)
		}
	}
	rename := strings.NewReplacer(
		template, name,
		strings.ToUpper(template[:1])+template[1:], strings.ToUpper(name[:1])+name[1:],
		strings.ToUpper(template), strings.ToUpper(name),
	)
	if err := copyTree(filepath.Join("api", template), filepath.Join("api", name), rename, func(path string) bool {
		return strings.HasSuffix(path, ".proto")
	}); err != nil {
		return err
	}
	if err := copyTree(filepath.Join("services", template), filepath.Join("services", name), rename, func(path string) bool {
		return filepath.Base(path) != "wire_gen.go"
	}); err != nil {
		return err
	}
	// Its image recipe, so that docker:build builds it too.
	recipe, err := os.ReadFile(filepath.Join("deployments", "docker", template+".Dockerfile"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join("deployments", "docker", name+".Dockerfile"), []byte(rename.Replace(string(recipe))), 0o644); err != nil {
		return err
	}
	if err := runIn(".", nil, "go", "work", "use", "./services/"+name); err != nil {
		return err
	}
	if err := Gen(); err != nil {
		return err
	}
	if err := runIn(filepath.Join("services", name), binaryEnv, "go", "build", "./..."); err != nil {
		return err
	}
	fmt.Printf("services/%s is ready: edit api/%s/v1/%s.proto, run `go run mage.go gen`, and fill in services/%s/internal/biz (the rules) and internal/service (the API over them).\n", name, name, name, name)
	return nil
}

// copyTree copies the files under src that keep accepts to dst, renaming
// paths and contents with r.
func copyTree(src, dst string, r *strings.Replacer, keep func(string) bool) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !keep(path) {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, r.Replace(rel))
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		return os.WriteFile(target, []byte(r.Replace(string(data))), 0o644)
	})
}
