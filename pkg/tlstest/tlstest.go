// Package tlstest makes a certificate authority and the certificates it
// issues, as PEM files in a test's temporary directory, for tests of TLS
// and mutual TLS between real servers and clients. It is devcerts that
// fails the test instead of returning errors.
package tlstest

import (
	"testing"

	"github.com/rollcall/rollcall/pkg/devcerts"
)

// CA is a certificate authority whose certificate is in CertFile.
type CA struct {
	t testing.TB
	*devcerts.CA
}

// Pair is a certificate and its key, as files.
type Pair = devcerts.Pair

// NewCA makes a CA named name.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	ca, err := devcerts.NewCA(t.TempDir(), name)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{t: t, CA: ca}
}

// Server issues a server certificate for the DNS names and IPs in names.
func (ca *CA) Server(names ...string) Pair {
	ca.t.Helper()
	p, err := ca.CA.Server(names...)
	if err != nil {
		ca.t.Fatal(err)
	}
	return p
}

// Client issues a client certificate named name, for mutual TLS.
func (ca *CA) Client(name string) Pair {
	ca.t.Helper()
	p, err := ca.CA.Client(name)
	if err != nil {
		ca.t.Fatal(err)
	}
	return p
}
