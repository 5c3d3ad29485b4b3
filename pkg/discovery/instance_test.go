package discovery_test

import (
	"strings"
	"testing"

	"github.com/rollcall/rollcall/pkg/discovery"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	in := discovery.Instance{Service: "greeter", ID: "host-127.0.0.1:7001", Addr: "127.0.0.1:7001",
		Metadata: discovery.Metadata{Version: "v1.2.0", Zone: "z1", Weight: 3, Labels: map[string]string{"canary": "true"}}}
	v, err := discovery.Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := discovery.Decode("rollcall", "greeter", discovery.Key("rollcall", in), v)
	if err != nil {
		t.Fatal(err)
	}
	if !out.Equal(in) {
		t.Errorf("round trip: got %+v, want %+v", out, in)
	}
}

func TestDecodeRejectsBadValuesNamingTheKey(t *testing.T) {
	tests := []struct {
		name, key, value, wantErr string
	}{
		{"other service", "rollcall/other/a", `{"Op":0,"Addr":"127.0.0.1:1"}`, "is not under"},
		{"nested key", "rollcall/greeter/a/b", `{"Op":0,"Addr":"127.0.0.1:1"}`, "invalid instance ID"},
		{"empty id", "rollcall/greeter/", `{"Op":0,"Addr":"127.0.0.1:1"}`, "invalid instance ID"},
		{"not json", "rollcall/greeter/a", `hello`, "not an endpoint record"},
		{"empty value", "rollcall/greeter/a", ``, "not an endpoint record"},
		{"delete op", "rollcall/greeter/a", `{"Op":1,"Addr":"127.0.0.1:1"}`, "Op 1"},
		{"empty addr", "rollcall/greeter/a", `{"Op":0,"Addr":""}`, `invalid address ""`},
		{"bad port", "rollcall/greeter/a", `{"Op":0,"Addr":"h:99999"}`, `invalid address "h:99999"`},
		{"absurd weight", "rollcall/greeter/a", `{"Op":0,"Addr":"127.0.0.1:1","Metadata":{"weight":4000000000}}`, "weight 4000000000"},
		{"oversize", "rollcall/greeter/a", `{"Op":0,"Addr":"127.0.0.1:1","x":"` + strings.Repeat("x", discovery.MaxValueBytes) + `"}`, "exceeds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := discovery.Decode("rollcall", "greeter", tt.key, []byte(tt.value))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), tt.key) {
				t.Errorf("Decode(%q) error = %v, want one naming the key and containing %q", tt.key, err, tt.wantErr)
			}
		})
	}
}

func TestDecodeKeepsInstanceWithForeignMetadata(t *testing.T) {
	// etcd's endpoints package allows any JSON as metadata.
	inst, err := discovery.Decode("rollcall", "greeter", "rollcall/greeter/a", []byte(`{"Op":0,"Addr":"127.0.0.1:1","Metadata":"v1"}`))
	if err != nil || inst.Addr != "127.0.0.1:1" {
		t.Errorf("Decode = %+v, %v; want the instance without metadata", inst, err)
	}
}

func TestPrefixDoesNotMatchLongerServiceNames(t *testing.T) {
	if p := discovery.Prefix("rollcall", "hello"); strings.HasPrefix("rollcall/helloworld/a", p) {
		t.Errorf("prefix %q matches a key of helloworld", p)
	}
}
