// Package protos compiles the .proto files of a tree, runs protoc plugins
// on them and lints them, as protoc or buf would, in process.
//
// protocompile (the compiler inside buf) parses and links the files; each
// plugin gets the CodeGeneratorRequest protoc would send it, so its output
// is byte for byte what protoc or buf generate writes. Lint checks buf's
// STANDARD rules. Neither protoc nor buf is needed: building buf from
// source costs a new machine about five CPU-minutes, more than everything
// else `mage gen` and `mage lint` do on the protos together.
package protos

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"

	"github.com/bufbuild/protocompile"
	"github.com/bufbuild/protocompile/linker"
	"github.com/bufbuild/protocompile/reporter"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Tree is the result of compiling every .proto file under one root.
type Tree struct {
	// Root is the directory the files' names are relative to, as an
	// import path (protoc -I, buf's module root).
	Root string
	// Files are the compiled files under Root, sorted by name.
	Files linker.Files
	// unusedImports are the compiler's warnings that a file imports
	// another and uses nothing of it.
	unusedImports []Finding
}

// Compile parses and links every .proto file under root, with the files
// protoc ships (google/protobuf/*.proto) importable as with protoc. It
// reports every error it finds, each with its file, line and column.
func Compile(ctx context.Context, root string) (*Tree, error) {
	var names []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(path) != ".proto" {
			return err
		}
		rel, err := filepath.Rel(root, path)
		names = append(names, filepath.ToSlash(rel))
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no .proto file under %s", root)
	}
	slices.Sort(names)
	tree := &Tree{Root: root}
	var errs []error
	rep := reporter.NewReporter(
		func(err reporter.ErrorWithPos) error {
			errs = append(errs, fmt.Errorf("%s: %w", filepath.Join(root, err.GetPosition().String()), err.Unwrap()))
			return nil // go on: report every error at once
		},
		func(err reporter.ErrorWithPos) {
			var unused linker.ErrorUnusedImport
			if errors.As(err, &unused) {
				pos := err.GetPosition()
				tree.unusedImports = append(tree.unusedImports, Finding{
					File: filepath.Join(root, pos.Filename), Line: pos.Line, Col: pos.Col,
					Rule: "IMPORT_USED", Message: fmt.Sprintf("Import %q is unused.", unused.UnusedImport()),
				})
			}
		},
	)
	compiler := protocompile.Compiler{
		Resolver:       protocompile.WithStandardImports(&protocompile.SourceResolver{ImportPaths: []string{root}}),
		SourceInfoMode: protocompile.SourceInfoStandard, // comments, as protoc passes them to plugins
		Reporter:       rep,
		MaxParallelism: 1, // the reporter's callbacks then need no lock
	}
	files, err := compiler.Compile(ctx, names...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if err != nil {
		return nil, fmt.Errorf("compile the protos under %s: %w", root, err)
	}
	tree.Files = files
	return tree, nil
}

// withDeps returns files and everything they import, each file after
// its imports, as a CodeGeneratorRequest lists them.
func withDeps(files linker.Files) []protoreflect.FileDescriptor {
	var order []protoreflect.FileDescriptor
	seen := map[string]bool{}
	var visit func(fd protoreflect.FileDescriptor)
	visit = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := range imports.Len() {
			visit(imports.Get(i).FileDescriptor)
		}
		order = append(order, fd)
	}
	for _, f := range files {
		visit(f)
	}
	return order
}

// position is where d is declared, with the file's name joined to the
// tree's root; with sub, where the part of d's declaration at that source
// path below d's is (sub {1}: its name), or where d is when that part is
// not written out.
func (t *Tree) position(d protoreflect.Descriptor, sub ...int32) Finding {
	file := d.ParentFile()
	locs := file.SourceLocations()
	loc := locs.ByDescriptor(d)
	if len(sub) > 0 {
		if part := locs.ByPath(append(slices.Clone(loc.Path), sub...)); part.Path != nil {
			loc = part
		}
	}
	return Finding{File: filepath.Join(t.Root, file.Path()), Line: loc.StartLine + 1, Col: loc.StartColumn + 1}
}
