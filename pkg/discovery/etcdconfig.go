package discovery

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/pkg/flagenv"
	"github.com/rollcall/rollcall/pkg/tlsfiles"
)

// DefaultEtcdEndpoint is the etcd a process reaches unless its EtcdConfig
// names endpoints: a local one, as in development.
const DefaultEtcdEndpoint = "127.0.0.1:2379"

// EtcdConfig is how a process reaches etcd. Its String never shows the
// password, so it can be logged.
type EtcdConfig struct {
	// Endpoints are etcd's client URLs or host:port addresses; empty
	// means DefaultEtcdEndpoint.
	Endpoints flagenv.List
	Username  string
	Password  string
	// TLS: a CA to verify etcd with, and a client certificate and key
	// for etcd's client-certificate auth. All optional.
	CAFile, CertFile, KeyFile string
}

// RegisterFlags adds -etcd-* flags to fs and their environment fallbacks
// (ETCD_ENDPOINTS, ETCD_USERNAME, ...) to env.
func (c *EtcdConfig) RegisterFlags(fs *flag.FlagSet, env map[string]string) {
	// A flag.Value shows its value at registration as the default.
	*c = c.withDefaults()
	fs.Var(&c.Endpoints, "etcd-endpoints", "comma-separated etcd endpoints")
	fs.StringVar(&c.Username, "etcd-username", c.Username, "etcd user name (auth enabled)")
	fs.StringVar(&c.Password, "etcd-password", c.Password, "etcd password; prefer $ETCD_PASSWORD to a flag")
	fs.StringVar(&c.CAFile, "etcd-cacert", c.CAFile, "CA certificate file to verify etcd's TLS certificate")
	fs.StringVar(&c.CertFile, "etcd-cert", c.CertFile, "client certificate file for etcd")
	fs.StringVar(&c.KeyFile, "etcd-key", c.KeyFile, "client key file for etcd")
	for name, variable := range map[string]string{
		"etcd-endpoints": "ETCD_ENDPOINTS", "etcd-username": "ETCD_USERNAME", "etcd-password": "ETCD_PASSWORD",
		"etcd-cacert": "ETCD_CACERT", "etcd-cert": "ETCD_CERT", "etcd-key": "ETCD_KEY",
	} {
		env[name] = variable
	}
}

func (c EtcdConfig) withDefaults() EtcdConfig {
	if len(c.Endpoints) == 0 {
		c.Endpoints = flagenv.List{DefaultEtcdEndpoint}
	}
	return c
}

// String describes the configuration without its password.
func (c EtcdConfig) String() string {
	s := "endpoints=" + c.Endpoints.String()
	if c.Username != "" {
		s += " user=" + c.Username + " password=<redacted>"
	}
	if c.CAFile != "" || c.CertFile != "" {
		s += " tls=on"
	}
	return s
}

// Validate checks the configuration; errors name the bad value (never the
// password).
func (c EtcdConfig) Validate() error {
	var errs []error
	if len(c.Endpoints) == 0 {
		errs = append(errs, errors.New("no etcd endpoints: set -etcd-endpoints or ETCD_ENDPOINTS"))
	}
	for _, ep := range c.Endpoints {
		host := ep
		if strings.Contains(ep, "://") {
			u, err := url.Parse(ep)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				errs = append(errs, fmt.Errorf("invalid etcd endpoint %q: want host:port or http(s)://host:port", ep))
				continue
			}
			host = u.Host
		}
		if err := ValidateAddr(host); err != nil {
			errs = append(errs, fmt.Errorf("invalid etcd endpoint %q: %w", ep, err))
		}
	}
	if (c.Username == "") != (c.Password == "") {
		errs = append(errs, errors.New("etcd username and password go together: set both or neither"))
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, fmt.Errorf("etcd client certificate %q and key %q go together: set both or neither", c.CertFile, c.KeyFile))
	}
	return errors.Join(errs...)
}

// NewClient fills c's zero fields with the defaults, validates it and
// returns an etcd client made by NewEtcdClient. It does not wait for etcd.
func (c EtcdConfig) NewClient() (*clientv3.Client, error) {
	c = c.withDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	cfg := clientv3.Config{
		Endpoints:   c.Endpoints,
		Username:    c.Username,
		Password:    c.Password,
		DialTimeout: 5 * time.Second,
		// No Logger: NewEtcdClient's sends the client's errors to slog
		// and drops its warnings (one per retry).
	}
	if c.CAFile != "" || c.CertFile != "" {
		tlsCfg, err := c.tlsConfig()
		if err != nil {
			return nil, err
		}
		cfg.TLS = tlsCfg
	}
	return NewEtcdClient(cfg)
}

// ConnectEtcd is NewClient for a process's assembly (a wire provider): it
// logs where it connects (never the password), and its cleanup closes
// the client.
func ConnectEtcd(cfg EtcdConfig, log *slog.Logger) (*clientv3.Client, func(), error) {
	c, err := cfg.NewClient()
	if err != nil {
		return nil, nil, fmt.Errorf("etcd client: %w", err)
	}
	log.Info("etcd client", "etcd", cfg.withDefaults().String())
	return c, func() { c.Close() }, nil
}

func (c EtcdConfig) tlsConfig() (*tls.Config, error) {
	cfg, err := tlsfiles.Files{CA: c.CAFile, Cert: c.CertFile, Key: c.KeyFile}.Client()
	if err != nil {
		return nil, fmt.Errorf("etcd TLS: %w", err)
	}
	return cfg, nil
}
