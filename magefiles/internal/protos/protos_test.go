package protos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// writeTree writes files (name -> content) under a temporary root.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		path := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const good = `syntax = "proto3";
package shop.v1;
option go_package = "example.com/shop/api/shop/v1;shopv1";
import "google/protobuf/timestamp.proto";
enum Size {
  SIZE_UNSPECIFIED = 0;
  SIZE_LARGE = 1;
}
message GetOrderRequest { string order_id = 1; }
message GetOrderResponse {
  google.protobuf.Timestamp placed_at = 1;
  oneof payment { string card = 2; string cash = 3; }
  map<string, int32> counts = 4;
  Size size = 5;
}
message ShopServiceListRequest {}
message ShopServiceListResponse {}
service ShopService {
  rpc GetOrder(GetOrderRequest) returns (GetOrderResponse);
  rpc List(ShopServiceListRequest) returns (ShopServiceListResponse);
}
`

// Each case breaks rules, and Lint names each broken rule, where it is
// broken, in file order; the good file breaks none.
func TestLintFindsEachStandardRule(t *testing.T) {
	for _, tt := range []struct {
		name  string
		files map[string]string
		want  []string // file:line: RULE
	}{
		{"good", map[string]string{"shop/v1/shop.proto": good}, nil},
		{"the repository's own protos", nil, nil},
		{
			"names",
			map[string]string{"shop/v1/shop.proto": `syntax = "proto3";
package shop.v1;
enum size { big = 0; Size_Small = 1; }
message order_line { string OrderId = 1; oneof Pay { string a = 2; } }
service shop { rpc get_order(order_line) returns (order_line); }
`},
			[]string{
				"3: ENUM_PASCAL_CASE", "3: ENUM_VALUE_UPPER_SNAKE_CASE", "3: ENUM_VALUE_PREFIX", "3: ENUM_ZERO_VALUE_SUFFIX",
				"3: ENUM_VALUE_UPPER_SNAKE_CASE", "3: ENUM_VALUE_PREFIX",
				"4: MESSAGE_PASCAL_CASE", "4: FIELD_LOWER_SNAKE_CASE", "4: ONEOF_LOWER_SNAKE_CASE",
				"5: SERVICE_PASCAL_CASE", "5: SERVICE_SUFFIX", "5: RPC_REQUEST_RESPONSE_UNIQUE", "5: RPC_PASCAL_CASE",
				"5: RPC_REQUEST_STANDARD_NAME", "5: RPC_RESPONSE_STANDARD_NAME",
			},
		},
		{
			"layout",
			map[string]string{
				"shop/v1/Shop-Orders.proto": `syntax = "proto3";
package shop.v1;
option go_package = "a/shop";
message A {}
`,
				"shop/v1/items.proto": `syntax = "proto3";
package shop.v1;
option go_package = "b/shop";
message B {}
`,
				"shop/v1/other.proto": `syntax = "proto3";
package shop;
message C {}
`,
				"misc/misc.proto": `package misc.v1;
import public "shop/v1/items.proto";
import "google/protobuf/empty.proto";
import weak "google/protobuf/any.proto";
message M { required string a = 1; }
enum E { option allow_alias = true; E_ONE = 1; E_UNSPECIFIED = 0; E_UNO = 1; }
`,
			},
			[]string{
				"misc/misc.proto:1: SYNTAX_SPECIFIED", "misc/misc.proto:1: PACKAGE_DIRECTORY_MATCH",
				"misc/misc.proto:2: IMPORT_NO_PUBLIC", "misc/misc.proto:3: IMPORT_USED",
				"misc/misc.proto:4: IMPORT_NO_WEAK", "misc/misc.proto:4: IMPORT_USED",
				"misc/misc.proto:5: FIELD_NOT_REQUIRED", "misc/misc.proto:6: ENUM_NO_ALLOW_ALIAS", "misc/misc.proto:6: ENUM_FIRST_VALUE_ZERO",
				"shop/v1/Shop-Orders.proto:1: FILE_LOWER_SNAKE_CASE", "shop/v1/Shop-Orders.proto:2: DIRECTORY_SAME_PACKAGE",
				"shop/v1/Shop-Orders.proto:2: PACKAGE_SAME_GO_PACKAGE",
				"shop/v1/items.proto:2: DIRECTORY_SAME_PACKAGE",
				"shop/v1/other.proto:2: PACKAGE_VERSION_SUFFIX", "shop/v1/other.proto:2: PACKAGE_DIRECTORY_MATCH", "shop/v1/other.proto:2: DIRECTORY_SAME_PACKAGE",
			},
		},
		{
			"import cycle",
			map[string]string{
				"a/v1/a.proto": "syntax = \"proto3\";\npackage a.v1;\nimport \"b/v1/b.proto\";\nmessage A { b.v1.B b = 1; }\n",
				"a/v1/c.proto": "syntax = \"proto3\";\npackage a.v1;\nmessage C {}\n",
				"b/v1/b.proto": "syntax = \"proto3\";\npackage b.v1;\nimport \"a/v1/c.proto\";\nmessage B { a.v1.C c = 1; }\n",
			},
			[]string{"a/v1/a.proto:2: PACKAGE_NO_IMPORT_CYCLE"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root := filepath.Join("..", "..", "..", "api")
			if tt.files != nil {
				root = writeTree(t, tt.files)
			}
			tree, err := Compile(context.Background(), root)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range tree.Lint() {
				file, _ := filepath.Rel(root, f.File)
				if len(tt.files) == 1 {
					got = append(got, fmt.Sprintf("%d: %s", f.Line, f.Rule))
				} else {
					got = append(got, fmt.Sprintf("%s:%d: %s", file, f.Line, f.Rule))
				}
				if !strings.Contains(f.String(), f.Rule) || f.Message == "" {
					t.Errorf("%q says too little", f)
				}
			}
			// Within one line, findings keep the order the rules run in;
			// compare as sets per line.
			slices.Sort(got)
			want := slices.Clone(tt.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("findings:\n%s\nwant:\n%s\nfull:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"), tree.Lint())
			}
		})
	}
}

// A file that does not compile is named with the line and column of each
// error, and every error is reported, not only the first.
func TestCompileNamesEachError(t *testing.T) {
	root := writeTree(t, map[string]string{
		"a/v1/a.proto": "syntax = \"proto3\";\npackage a.v1;\nmessage A { Missing m = 1; }\n",
		"b/v1/b.proto": "syntax = \"proto3\";\npackage b.v1;\nmessage B { string s = 1 }\n",
	})
	_, err := Compile(context.Background(), root)
	if err == nil {
		t.Fatal("compiled")
	}
	for _, want := range []string{filepath.Join(root, "a/v1/a.proto") + ":3:13", "Missing", filepath.Join(root, "b/v1/b.proto") + ":3:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if _, err := Compile(context.Background(), t.TempDir()); err == nil || !strings.Contains(err.Error(), "no .proto file") {
		t.Errorf("an empty tree: %v, want an error saying it has no .proto file", err)
	}
}

// A plugin that fails, or answers with an error, fails Generate with the
// plugin's name and what it said; nothing is written outside the output
// directory.
func TestGenerateReportsPluginFailures(t *testing.T) {
	tree, err := Compile(context.Background(), writeTree(t, map[string]string{"shop/v1/shop.proto": good}))
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	for _, tt := range []struct {
		name   string
		plugin Plugin
		want   string
	}{
		{"exits", Plugin{Command: []string{"sh", "-c", "echo no such option >&2; exit 3"}}, "sh -c echo no such option >&2; exit 3: exit status 3\nno such option"},
		// A CodeGeneratorResponse holding only error (field 1) = "bad".
		{"answers an error", Plugin{Command: []string{"sh", "-c", `cat >/dev/null; printf '\n\003bad'`}}, "bad"},
		// One file (field 15) named "../x" (field 1).
		{"escapes", Plugin{Command: []string{"sh", "-c", `cat >/dev/null; printf 'z\006\n\004../x'`}}, `"../x": a plugin may only write below its output directory`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tree.Generate(context.Background(), ".", nil, out, tt.plugin)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Generate: %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(out), "x")); err == nil {
		t.Error("a plugin wrote outside the output directory")
	}
}
