package discovery_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/etcdtest"
	"github.com/rollcall/rollcall/pkg/flagenv"
	"github.com/rollcall/rollcall/pkg/tlstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// A process reaches an etcd that requires TLS client certificates with the
// files its flags name; without a trusted certificate it does not.
func TestEtcdOverTLS(t *testing.T) {
	ca, other := tlstest.NewCA(t, "etcd"), tlstest.NewCA(t, "other")
	server, client, stranger := ca.Server("127.0.0.1"), ca.Client("greeter"), other.Client("stranger")
	srv := etcdtest.StartTLS(t, etcdtest.TLS{CA: ca.CertFile, Cert: server.CertFile, Key: server.KeyFile,
		ClientCert: client.CertFile, ClientKey: client.KeyFile})

	for _, tc := range []struct {
		name   string
		cfg    discovery.EtcdConfig
		wantOK bool
	}{
		{"trusted client certificate", discovery.EtcdConfig{CAFile: ca.CertFile, CertFile: client.CertFile, KeyFile: client.KeyFile}, true},
		{"certificate of another CA", discovery.EtcdConfig{CAFile: ca.CertFile, CertFile: stranger.CertFile, KeyFile: stranger.KeyFile}, false},
		{"no client certificate", discovery.EtcdConfig{CAFile: ca.CertFile}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Endpoints = flagenv.List{srv.Endpoint()}
			c, err := tc.cfg.NewClient()
			if err == nil {
				defer c.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				defer cancel()
				_, err = c.Put(ctx, "rollcall/tls-probe", "x")
			}
			if tc.wantOK != (err == nil) {
				t.Fatalf("err = %v, want success %v", err, tc.wantOK)
			}
		})
	}
}

func TestEtcdConfigErrorsNameTheFile(t *testing.T) {
	_, err := discovery.EtcdConfig{Endpoints: flagenv.List{"127.0.0.1:1"}, CAFile: "/nonexistent/etcd-ca.pem"}.NewClient()
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/etcd-ca.pem") {
		t.Fatalf("NewClient: %v, want an error naming the CA file", err)
	}
}

// A process that names no endpoints reaches the local etcd.
func TestEtcdConfigDefaultsToTheLocalEtcd(t *testing.T) {
	c, err := discovery.EtcdConfig{}.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.Endpoints(); len(got) != 1 || got[0] != discovery.DefaultEtcdEndpoint {
		t.Errorf("endpoints = %v, want [%s]", got, discovery.DefaultEtcdEndpoint)
	}
}
