package protos

import (
	"cmp"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// Finding is one broken lint rule.
type Finding struct {
	File      string // the file's name joined to the tree's root
	Line, Col int    // from 1
	Rule      string // buf's ID for the rule, e.g. SERVICE_SUFFIX
	Message   string
}

func (f Finding) String() string {
	return fmt.Sprintf("%s:%d:%d: %s (%s)", f.File, f.Line, f.Col, f.Message, f.Rule)
}

// Lint checks the tree against buf's STANDARD lint rules, with buf's
// defaults (services end in "Service", enum zero values in
// "_UNSPECIFIED", no google.protobuf.Empty as a request or response), and
// returns what breaks them, in file order. PROTOVALIDATE, which checks
// protovalidate's constraints, is left out: it applies only to files that
// import buf/validate.
func (t *Tree) Lint() []Finding {
	l := &linter{tree: t, findings: slices.Clone(t.unusedImports), users: map[protoreflect.FullName][]protoreflect.MethodDescriptor{}}
	for _, f := range t.Files {
		l.file(f)
	}
	l.packages()
	l.requestResponseUnique()
	slices.SortStableFunc(l.findings, func(a, b Finding) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
	})
	return l.findings
}

type linter struct {
	tree     *Tree
	findings []Finding
	// users are the RPCs that take or return each message.
	users map[protoreflect.FullName][]protoreflect.MethodDescriptor
}

// Source paths below a descriptor's, for pointing at the part a rule is
// about, as buf does. Every descriptor's name is its field 1.
const (
	nameField      = 1
	valueNumber    = 2 // EnumValueDescriptorProto.number
	methodInput    = 2 // MethodDescriptorProto.input_type
	methodOutput   = 3 // MethodDescriptorProto.output_type
	enumOptions    = 3 // EnumDescriptorProto.options
	filePackage    = 2 // FileDescriptorProto.package
	fileDependency = 3 // FileDescriptorProto.dependency
)

func (l *linter) report(d protoreflect.Descriptor, rule, format string, args ...any) {
	l.reportAt(d, nil, rule, format, args...)
}

// reportAt reports at the part of d's declaration at source path sub
// below d's.
func (l *linter) reportAt(d protoreflect.Descriptor, sub []int32, rule, format string, args ...any) {
	f := l.tree.position(d, sub...)
	f.Rule, f.Message = rule, fmt.Sprintf(format, args...)
	l.findings = append(l.findings, f)
}

var (
	lowerSnake = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)
	upperSnake = regexp.MustCompile(`^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$`)
	pascal     = regexp.MustCompile(`^[A-Z][A-Za-z0-9]*$`)
	// version is the last part of a package name as buf wants it: v1,
	// v1beta1, v1alpha2, v1p1beta1, v2test, v2testfoo.
	version = regexp.MustCompile(`^v[1-9][0-9]*((p[1-9][0-9]*)?(alpha|beta)[1-9][0-9]*|test[a-z0-9]*)?$`)
)

func (l *linter) file(f protoreflect.FileDescriptor) {
	fdp := fileProto(f)
	if fdp.Syntax == nil && fdp.Edition == nil {
		l.report(f, "SYNTAX_SPECIFIED", "Files must have a syntax explicitly specified. If no syntax is specified, the file defaults to \"proto2\".")
	}
	if base := strings.TrimSuffix(path.Base(f.Path()), ".proto"); !lowerSnake.MatchString(base) {
		l.report(f, "FILE_LOWER_SNAKE_CASE", "Filename %q should be lower_snake_case.proto, such as %q.", path.Base(f.Path()), toLowerSnake(base)+".proto")
	}
	pkg := string(f.Package())
	if pkg == "" {
		l.report(f, "PACKAGE_DEFINED", "Files must have a package defined.")
	} else {
		at := []int32{filePackage}
		parts := strings.Split(pkg, ".")
		for _, p := range parts {
			if !lowerSnake.MatchString(p) {
				l.reportAt(f, at, "PACKAGE_LOWER_SNAKE_CASE", "Package name %q should be lower_snake.case, such as %q.", pkg, toLowerSnake(pkg))
				break
			}
		}
		if len(parts) < 2 || !version.MatchString(parts[len(parts)-1]) {
			l.reportAt(f, at, "PACKAGE_VERSION_SUFFIX", "Package name %q should be suffixed with a correctly formed version, such as %q.", pkg, pkg+".v1")
		}
		if want := strings.ReplaceAll(pkg, ".", "/"); path.Dir(f.Path()) != want {
			l.reportAt(f, at, "PACKAGE_DIRECTORY_MATCH", "Files with package %q must be within a directory %q relative to root but were in directory %q.", pkg, want, path.Dir(f.Path()))
		}
	}
	imports := f.Imports()
	for i := range imports.Len() {
		at := []int32{fileDependency, int32(i)}
		switch imp := imports.Get(i); {
		case imp.IsPublic:
			l.reportAt(f, at, "IMPORT_NO_PUBLIC", "Import %q must not be public.", imp.Path())
		case slices.Contains(fdp.GetWeakDependency(), int32(i)):
			l.reportAt(f, at, "IMPORT_NO_WEAK", "Import %q must not be weak.", imp.Path())
		}
	}
	l.messages(f.Messages())
	l.enums(f.Enums())
	services := f.Services()
	for i := range services.Len() {
		l.service(services.Get(i))
	}
}

func (l *linter) messages(msgs protoreflect.MessageDescriptors) {
	for i := range msgs.Len() {
		m := msgs.Get(i)
		if m.IsMapEntry() {
			continue // named by the compiler
		}
		if !pascal.MatchString(string(m.Name())) {
			l.reportAt(m, []int32{nameField}, "MESSAGE_PASCAL_CASE", "Message name %q should be PascalCase, such as %q.", m.Name(), toPascal(string(m.Name())))
		}
		fields := m.Fields()
		for j := range fields.Len() {
			fd := fields.Get(j)
			if !lowerSnake.MatchString(string(fd.Name())) {
				l.reportAt(fd, []int32{nameField}, "FIELD_LOWER_SNAKE_CASE", "Field name %q should be lower_snake_case, such as %q.", fd.Name(), toLowerSnake(string(fd.Name())))
			}
			if fd.Cardinality() == protoreflect.Required {
				l.reportAt(fd, []int32{nameField}, "FIELD_NOT_REQUIRED", "Field named %q should not be required.", fd.Name())
			}
		}
		oneofs := m.Oneofs()
		for j := range oneofs.Len() {
			if o := oneofs.Get(j); !o.IsSynthetic() && !lowerSnake.MatchString(string(o.Name())) {
				l.reportAt(o, []int32{nameField}, "ONEOF_LOWER_SNAKE_CASE", "Oneof name %q should be lower_snake_case, such as %q.", o.Name(), toLowerSnake(string(o.Name())))
			}
		}
		l.messages(m.Messages())
		l.enums(m.Enums())
	}
}

func (l *linter) enums(enums protoreflect.EnumDescriptors) {
	for i := range enums.Len() {
		e := enums.Get(i)
		if !pascal.MatchString(string(e.Name())) {
			l.reportAt(e, []int32{nameField}, "ENUM_PASCAL_CASE", "Enum name %q should be PascalCase, such as %q.", e.Name(), toPascal(string(e.Name())))
		}
		if opts, ok := e.Options().(*descriptorpb.EnumOptions); ok && opts.GetAllowAlias() {
			l.reportAt(e, []int32{enumOptions}, "ENUM_NO_ALLOW_ALIAS", "Enum option \"allow_alias\" on enum %q must be false.", e.Name())
		}
		prefix := strings.ToUpper(toLowerSnake(string(e.Name()))) + "_"
		values := e.Values()
		for j := range values.Len() {
			v := values.Get(j)
			name := string(v.Name())
			if j == 0 && v.Number() != 0 {
				l.reportAt(v, []int32{valueNumber}, "ENUM_FIRST_VALUE_ZERO", "First enum value %q should have a numeric value of 0", name)
			}
			if !upperSnake.MatchString(name) {
				l.reportAt(v, []int32{nameField}, "ENUM_VALUE_UPPER_SNAKE_CASE", "Enum value name %q should be UPPER_SNAKE_CASE, such as %q.", name, strings.ToUpper(toLowerSnake(name)))
			}
			if !strings.HasPrefix(name, prefix) {
				l.reportAt(v, []int32{nameField}, "ENUM_VALUE_PREFIX", "Enum value name %q should be prefixed with %q.", name, prefix)
			}
			if v.Number() == 0 && !strings.HasSuffix(name, "_UNSPECIFIED") {
				l.reportAt(v, []int32{nameField}, "ENUM_ZERO_VALUE_SUFFIX", "Enum zero value name %q should be suffixed with \"_UNSPECIFIED\".", name)
			}
		}
	}
}

func (l *linter) service(s protoreflect.ServiceDescriptor) {
	if !pascal.MatchString(string(s.Name())) {
		l.reportAt(s, []int32{nameField}, "SERVICE_PASCAL_CASE", "Service name %q should be PascalCase, such as %q.", s.Name(), toPascal(string(s.Name())))
	}
	if !strings.HasSuffix(string(s.Name()), "Service") {
		l.reportAt(s, []int32{nameField}, "SERVICE_SUFFIX", "Service name %q should be suffixed with \"Service\".", s.Name())
	}
	methods := s.Methods()
	for i := range methods.Len() {
		m := methods.Get(i)
		name := string(m.Name())
		if !pascal.MatchString(name) {
			l.reportAt(m, []int32{nameField}, "RPC_PASCAL_CASE", "RPC name %q should be PascalCase, such as %q.", name, toPascal(name))
		}
		for _, io := range []struct {
			rule, what, suffix string
			at                 int32
			msg                protoreflect.MessageDescriptor
		}{
			{"RPC_REQUEST_STANDARD_NAME", "request", "Request", methodInput, m.Input()},
			{"RPC_RESPONSE_STANDARD_NAME", "response", "Response", methodOutput, m.Output()},
		} {
			got, want := string(io.msg.Name()), toPascal(name)+io.suffix
			if got != want && got != string(s.Name())+want {
				l.reportAt(m, []int32{io.at}, io.rule, "RPC %s type %q should be named %q or %q.", io.what, got, want, string(s.Name())+want)
			}
		}
		l.users[m.Input().FullName()] = append(l.users[m.Input().FullName()], m)
		if m.Output() != m.Input() {
			l.users[m.Output().FullName()] = append(l.users[m.Output().FullName()], m)
		}
	}
}

// requestResponseUnique reports each RPC whose request is its response,
// or whose request or response another RPC uses too: a message of its own
// can change without changing another RPC's contract.
func (l *linter) requestResponseUnique() {
	for _, msg := range sortedKeys(l.users) {
		users := l.users[msg]
		for _, m := range users {
			switch {
			case m.Input() == m.Output():
				l.report(m, "RPC_REQUEST_RESPONSE_UNIQUE", "RPC %q has the same type %q for the request and response.", m.Name(), msg)
			case len(users) > 1:
				l.report(m, "RPC_REQUEST_RESPONSE_UNIQUE", "%q is used as the request or response type for multiple RPCs.", msg)
			}
		}
	}
}

// packages checks what spans files: a package's files share a directory
// and the language options that name it, a directory holds one package,
// and packages do not import one another in a cycle.
func (l *linter) packages() {
	byPkg := map[string][]protoreflect.FileDescriptor{}
	byDir := map[string][]protoreflect.FileDescriptor{}
	imports := map[string]map[string]bool{}
	for _, f := range l.tree.Files {
		pkg := string(f.Package())
		byPkg[pkg] = append(byPkg[pkg], f)
		byDir[path.Dir(f.Path())] = append(byDir[path.Dir(f.Path())], f)
		if imports[pkg] == nil {
			imports[pkg] = map[string]bool{}
		}
		fi := f.Imports()
		for i := range fi.Len() {
			if dep := string(fi.Get(i).Package()); dep != pkg {
				imports[pkg][dep] = true
			}
		}
	}
	for _, dir := range sortedKeys(byDir) {
		if pkgs := distinct(byDir[dir], func(f protoreflect.FileDescriptor) string { return string(f.Package()) }); len(pkgs) > 1 {
			for _, f := range byDir[dir] {
				l.reportAt(f, []int32{filePackage}, "DIRECTORY_SAME_PACKAGE", "Multiple packages %q detected within directory %q.", strings.Join(pkgs, ","), dir)
			}
		}
	}
	options := []struct {
		rule, option string
		value        func(*descriptorpb.FileOptions) string
	}{
		{"PACKAGE_SAME_DIRECTORY", "directory", nil},
		{"PACKAGE_SAME_GO_PACKAGE", "go_package", (*descriptorpb.FileOptions).GetGoPackage},
		{"PACKAGE_SAME_JAVA_PACKAGE", "java_package", (*descriptorpb.FileOptions).GetJavaPackage},
		{"PACKAGE_SAME_JAVA_MULTIPLE_FILES", "java_multiple_files", func(o *descriptorpb.FileOptions) string { return fmt.Sprint(o.GetJavaMultipleFiles()) }},
		{"PACKAGE_SAME_CSHARP_NAMESPACE", "csharp_namespace", (*descriptorpb.FileOptions).GetCsharpNamespace},
		{"PACKAGE_SAME_PHP_NAMESPACE", "php_namespace", (*descriptorpb.FileOptions).GetPhpNamespace},
		{"PACKAGE_SAME_RUBY_PACKAGE", "ruby_package", (*descriptorpb.FileOptions).GetRubyPackage},
		{"PACKAGE_SAME_SWIFT_PREFIX", "swift_prefix", (*descriptorpb.FileOptions).GetSwiftPrefix},
	}
	for _, pkg := range sortedKeys(byPkg) {
		files := byPkg[pkg]
		for _, o := range options {
			values := distinct(files, func(f protoreflect.FileDescriptor) string {
				if o.value == nil {
					return path.Dir(f.Path())
				}
				return o.value(fileProto(f).GetOptions())
			})
			if len(values) > 1 {
				l.reportAt(files[0], []int32{filePackage}, o.rule, "Files in package %q have different %s values: %q.", pkg, o.option, values)
			}
		}
	}
	// A cycle is found from each package on it; it is reported once, at
	// its first package in name order.
	reported := map[string]bool{}
	for _, pkg := range sortedKeys(imports) {
		if cycle := findCycle(imports, pkg); cycle != nil && !reported[pkg] {
			for _, p := range cycle {
				reported[p] = true
			}
			l.reportAt(byPkg[pkg][0], []int32{filePackage}, "PACKAGE_NO_IMPORT_CYCLE", "Package import cycle: %s.", strings.Join(append(cycle, pkg), " -> "))
		}
	}
}

// findCycle returns the packages on an import path from start back to
// itself, or nil.
func findCycle(imports map[string]map[string]bool, start string) []string {
	var path []string
	seen := map[string]bool{}
	var walk func(pkg string) bool
	walk = func(pkg string) bool {
		path = append(path, pkg)
		for _, dep := range sortedKeys(imports[pkg]) {
			if dep == start {
				return true
			}
			if !seen[dep] {
				seen[dep] = true
				if walk(dep) {
					return true
				}
			}
		}
		path = path[:len(path)-1]
		return false
	}
	if walk(start) {
		return path
	}
	return nil
}

func fileProto(f protoreflect.FileDescriptor) *descriptorpb.FileDescriptorProto {
	if r, ok := f.(interface {
		FileDescriptorProto() *descriptorpb.FileDescriptorProto
	}); ok {
		return r.FileDescriptorProto() // as written: an unset syntax stays unset
	}
	return &descriptorpb.FileDescriptorProto{Options: &descriptorpb.FileOptions{}}
}

func distinct(files []protoreflect.FileDescriptor, key func(protoreflect.FileDescriptor) string) []string {
	var values []string
	for _, f := range files {
		if v := key(f); !slices.Contains(values, v) {
			values = append(values, v)
		}
	}
	slices.Sort(values)
	return values
}

func sortedKeys[K ~string, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// toLowerSnake turns FooBar, fooBar, Foo-Bar and HTTPCode into foo_bar
// and http_code; dots stay.
func toLowerSnake(s string) string {
	r := []rune(strings.NewReplacer("-", "_", " ", "_").Replace(s))
	var b strings.Builder
	for i, c := range r {
		if unicode.IsUpper(c) && i > 0 && r[i-1] != '_' && r[i-1] != '.' &&
			(unicode.IsLower(r[i-1]) || unicode.IsDigit(r[i-1]) || (i+1 < len(r) && unicode.IsLower(r[i+1]))) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(c))
	}
	return b.String()
}

// toPascal turns foo_bar and fooBar into FooBar.
func toPascal(s string) string {
	var b strings.Builder
	for _, word := range strings.Split(s, "_") {
		if word != "" {
			b.WriteString(strings.ToUpper(word[:1]) + word[1:])
		}
	}
	return b.String()
}
