// Package tlsfiles builds TLS configurations from the PEM files that flags
// name: a CA, and a certificate with its key. Errors name the file.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Files names PEM files; each may be empty.
type Files struct {
	// CA verifies the other side: the server for a client (system roots
	// when empty), client certificates for a server (none asked when
	// empty).
	CA string
	// Cert and Key are this side's certificate and key.
	Cert, Key string
}

// Set reports whether any file is named.
func (f Files) Set() bool { return f.CA != "" || f.Cert != "" || f.Key != "" }

// Validate checks that Cert and Key come together.
func (f Files) Validate() error {
	if (f.Cert == "") != (f.Key == "") {
		return fmt.Errorf("certificate %q and key %q: give both or neither", f.Cert, f.Key)
	}
	return nil
}

// Client returns a client's TLS configuration: it verifies the server
// against CA and presents Cert when set (mutual TLS). The server name to
// verify is the one dialed, which gRPC fills in.
func (f Files) Client() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	var err error
	if cfg.RootCAs, err = f.pool(); err != nil {
		return nil, err
	}
	if cfg.Certificates, err = f.pair(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Server returns a server's TLS configuration presenting Cert; with CA set
// it requires client certificates signed by CA (mutual TLS).
func (f Files) Server() (*tls.Config, error) {
	if f.Cert == "" {
		return nil, errors.New("a TLS server needs a certificate and key")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	var err error
	if cfg.Certificates, err = f.pair(); err != nil {
		return nil, err
	}
	if cfg.ClientCAs, err = f.pool(); err != nil {
		return nil, err
	}
	if cfg.ClientCAs != nil {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

func (f Files) pool() (*x509.CertPool, error) {
	if f.CA == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA certificate %q holds no PEM certificate", f.CA)
	}
	return pool, nil
}

func (f Files) pair() ([]tls.Certificate, error) {
	if err := f.Validate(); err != nil || f.Cert == "" {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("certificate %q with key %q: %w", f.Cert, f.Key, err)
	}
	return []tls.Certificate{cert}, nil
}
