package call_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/rollcall/rollcall/pkg/call"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/etcdtest"
	"github.com/rollcall/rollcall/pkg/serve"
	"github.com/rollcall/rollcall/pkg/tlsfiles"
	"github.com/rollcall/rollcall/pkg/tlstest"
)

// TLS between services: the client verifies the server's certificate
// against the service name it dialed, and with mutual TLS the server
// verifies the client's. Real servers on 127.0.0.1, found through etcd.
func TestTLS(t *testing.T) {
	srv := etcdtest.Start(t)
	ca, other := tlstest.NewCA(t, "rollcall"), tlstest.NewCA(t, "other")
	greeterCert, shopCert := ca.Server("greeter"), ca.Server("shop")
	clientCert, strangerCert := ca.Client("client"), other.Client("stranger")

	for _, tc := range []struct {
		name    string
		server  tlsfiles.Files // the greeter's, registered as "greeter"
		client  tlsfiles.Files
		wantErr string // empty: the call succeeds
		// serverSays is why the server refused the connection, in its log.
		serverSays string
	}{
		{"TLS", tlsfiles.Files{Cert: greeterCert.CertFile, Key: greeterCert.KeyFile},
			tlsfiles.Files{CA: ca.CertFile}, "", ""},
		{"certificate of another service", tlsfiles.Files{Cert: shopCert.CertFile, Key: shopCert.KeyFile},
			tlsfiles.Files{CA: ca.CertFile}, "not greeter", ""},
		{"server from an unknown CA", tlsfiles.Files{Cert: greeterCert.CertFile, Key: greeterCert.KeyFile},
			tlsfiles.Files{CA: other.CertFile}, "unknown authority", ""},
		{"plaintext client, TLS server", tlsfiles.Files{Cert: greeterCert.CertFile, Key: greeterCert.KeyFile},
			tlsfiles.Files{}, "Unavailable", "tls: first record does not look like a TLS handshake"},
		{"mutual TLS", tlsfiles.Files{Cert: greeterCert.CertFile, Key: greeterCert.KeyFile, CA: ca.CertFile},
			tlsfiles.Files{CA: ca.CertFile, Cert: clientCert.CertFile, Key: clientCert.KeyFile}, "", ""},
		{"mutual TLS, client without certificate", tlsfiles.Files{Cert: greeterCert.CertFile, Key: greeterCert.KeyFile, CA: ca.CertFile},
			tlsfiles.Files{CA: ca.CertFile}, "Unavailable", "tls: client didn't provide a certificate"},
		{"mutual TLS, client of another CA", tlsfiles.Files{Cert: greeterCert.CertFile, Key: greeterCert.KeyFile, CA: ca.CertFile},
			// A client offers only a certificate from a CA the server names.
			tlsfiles.Files{CA: ca.CertFile, Cert: strangerCert.CertFile, Key: strangerCert.KeyFile}, "Unavailable", "tls: client didn't provide a certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			quiet := slog.New(slog.DiscardHandler)
			logMark := grpcInfo.mark()
			s, err := serve.New(serve.Config{Listen: "127.0.0.1:0", Service: "greeter", ID: "g1", DrainDelay: -1, StopTimeout: time.Second,
				TLS: tc.server}, srv.Client(), serve.WithLogger(quiet))
			if err != nil {
				t.Fatal(err)
			}
			ctx, stop := context.WithCancel(context.Background())
			ran := make(chan error, 1)
			go func() { ran <- s.Run(ctx) }()
			defer func() { stop(); <-ran }()

			rb, err := resolve.NewBuilder(srv.Client(), resolve.WithLogger(quiet))
			if err != nil {
				t.Fatal(err)
			}
			conn, err := call.Dial(rb, "greeter", call.WithTLS(tc.client))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			callCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var resp *healthpb.HealthCheckResponse
			// Until the instance reaches the balancer, calls fail fast with
			// "no instance" (or "no children" while the first list, empty,
			// is being replaced).
			for {
				resp, err = healthpb.NewHealthClient(conn).Check(callCtx, &healthpb.HealthCheckRequest{Service: "greeter"})
				if err == nil || callCtx.Err() != nil || !strings.Contains(err.Error(), "no instance") && !strings.Contains(err.Error(), "no children") {
					break
				}
				time.Sleep(20 * time.Millisecond) // polls etcd's arrival; no event to await from outside
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("call failed: %v", err)
			case tc.wantErr == "" && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING:
				t.Fatalf("status %v, want SERVING", resp.GetStatus())
			case tc.wantErr != "" && err == nil:
				t.Fatal("call succeeded, want it refused")
			case tc.wantErr != "" && status.Code(err) != codes.Unavailable:
				t.Fatalf("error %v, want Unavailable", err)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr) && !strings.Contains(status.Code(err).String(), tc.wantErr):
				t.Fatalf("error %v does not say %q", err, tc.wantErr)
			case tc.serverSays != "" && !grpcInfo.await(logMark, tc.serverSays):
				t.Fatalf("call refused (%v), but the server's log does not say %q", err, tc.serverSays)
			}
		})
	}
}

func TestTLSFilesErrorsNameTheFile(t *testing.T) {
	rb, err := resolve.NewBuilder(etcdtest.Start(t).Client())
	if err != nil {
		t.Fatal(err)
	}
	_, err = call.Dial(rb, "greeter", call.WithTLS(tlsfiles.Files{CA: "/nonexistent/ca.pem"}))
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/ca.pem") {
		t.Fatalf("Dial: %v, want an error naming the CA file", err)
	}
}
