package protos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

// Plugin is a protoc plugin: a command that reads a CodeGeneratorRequest on
// its stdin and writes a CodeGeneratorResponse on its stdout.
type Plugin struct {
	// Command runs the plugin, e.g. go tool protoc-gen-go.
	Command []string
	// Param is the plugin's parameter, as protoc's --NAME_opt.
	Param string
}

func (p Plugin) String() string { return strings.Join(p.Command, " ") }

// Generate runs each plugin on the tree's files, in the directory dir
// with env added to this process's environment, and writes the files it
// returns under out.
func (t *Tree) Generate(ctx context.Context, dir string, env []string, out string, plugins ...Plugin) error {
	all := withDeps(t.Files)
	req := &pluginpb.CodeGeneratorRequest{ProtoFile: make([]*descriptorpb.FileDescriptorProto, 0, len(all))}
	for _, f := range t.Files {
		req.FileToGenerate = append(req.FileToGenerate, f.Path())
	}
	for _, f := range all {
		req.ProtoFile = append(req.ProtoFile, protodesc.ToFileDescriptorProto(f))
	}
	for _, p := range plugins {
		req.Parameter = proto.String(p.Param)
		if err := runPlugin(ctx, dir, env, out, p, req); err != nil {
			return fmt.Errorf("%v: %w", p, err)
		}
	}
	return nil
}

func runPlugin(ctx context.Context, dir string, env []string, out string, p Plugin, req *pluginpb.CodeGeneratorRequest) error {
	in, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, p.Command[0], p.Command[1:]...)
	cmd.Dir, cmd.Env = dir, append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(in), &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w\n%s", err, stderr.Bytes())
	}
	var res pluginpb.CodeGeneratorResponse
	if err := proto.Unmarshal(stdout.Bytes(), &res); err != nil {
		return fmt.Errorf("read its response: %w", err)
	}
	if res.Error != nil {
		return errors.New(res.GetError())
	}
	for _, f := range res.File {
		name := filepath.FromSlash(f.GetName())
		switch {
		case f.GetName() == "":
			return errors.New("it returned a file with no name (continuing the previous file is not supported)")
		case f.GetInsertionPoint() != "":
			return fmt.Errorf("%s: insertion points are not supported", f.GetName())
		case !filepath.IsLocal(name):
			return fmt.Errorf("%q: a plugin may only write below its output directory", f.GetName())
		}
		path := filepath.Join(out, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(f.GetContent()), 0o644); err != nil {
			return err
		}
	}
	return nil
}
