package discovery

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// DefaultNamespace is the first segment of every key rollcall writes, unless
// a registration or resolver is given another.
const DefaultNamespace = "rollcall"

// Limits on what a registration may carry. Values in etcd are untrusted: a
// value over these limits is rejected when read, so one bad writer costs
// bounded memory and never hides the valid instances.
const (
	MaxValueBytes = 16 << 10
	MaxLabels     = 64
	// MaxWeight bounds a registered weight: one value written by hand
	// must not take every call.
	MaxWeight = 1 << 16
)

// Instance is one running copy of a service, as it is registered in etcd.
type Instance struct {
	// Service is the name clients dial, e.g. "greeter".
	Service string
	// ID identifies the instance within its service; it is the last key
	// segment. Stable for the life of a process.
	ID string
	// Addr is the host:port clients connect to.
	Addr string
	// Metadata travels with the address to clients' balancers.
	Metadata Metadata
}

// Metadata describes an instance to balancers and operators.
type Metadata struct {
	Version string `json:"version,omitempty"`
	Zone    string `json:"zone,omitempty"`
	// Weight is the instance's relative share of calls for weight-aware
	// balancers; 0 means 1.
	Weight uint32            `json:"weight,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
}

// Equal reports whether o is an Instance equal to i. gRPC compares resolver
// attributes with it; Instance holds a map, so == would panic.
func (i Instance) Equal(o any) bool {
	other, ok := o.(Instance)
	return ok && i.Service == other.Service && i.ID == other.ID && i.Addr == other.Addr &&
		i.Metadata.Version == other.Metadata.Version && i.Metadata.Zone == other.Metadata.Zone &&
		i.Metadata.Weight == other.Metadata.Weight && maps.Equal(i.Metadata.Labels, other.Metadata.Labels)
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidateService returns an error naming service when it cannot be a key
// segment: empty, over 128 bytes, or holding anything but letters, digits,
// '.', '_' and '-' (a '/' would let one service read another's prefix).
func ValidateService(service string) error {
	if !nameRE.MatchString(service) {
		return fmt.Errorf("invalid service name %q: want 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit", service)
	}
	return nil
}

// ValidateNamespace returns an error naming ns unless it is one or more
// '/'-separated segments that are each a valid service name.
func ValidateNamespace(ns string) error {
	for seg := range strings.SplitSeq(ns, "/") {
		if !nameRE.MatchString(seg) {
			return fmt.Errorf("invalid namespace %q: want '/'-separated segments of letters, digits, '.', '_' or '-'", ns)
		}
	}
	return nil
}

var idRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$`)

// ValidateID returns an error naming id unless it can be a key segment.
func ValidateID(id string) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("invalid instance ID %s: want 1-128 letters, digits, '.', '_', ':', '@' or '-'", shorten(id))
	}
	return nil
}

// ValidateAddr returns an error naming addr unless it is a host:port that a
// client can dial: a wildcard host (0.0.0.0, ::) or port 0 is not.
func ValidateAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("invalid address %q: %w", addr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		return fmt.Errorf("invalid address %q: advertise a host clients can reach, not a wildcard", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("invalid address %q: port must be 1-65535", addr)
	}
	return nil
}

// DefaultID derives an instance ID from the host name and the advertised
// address, so that it is stable for a process and unique on a host.
func DefaultID(addr string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "host"
	}
	id := strings.Map(func(r rune) rune {
		if strings.ContainsRune("._:@-", r) || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, host+"-"+addr)
	if len(id) > 128 {
		id = id[:128]
	}
	return id
}

// Validate checks every field a registration writes.
func (i Instance) Validate() error {
	var errs []error
	errs = append(errs, ValidateService(i.Service), ValidateID(i.ID), ValidateAddr(i.Addr))
	if n := len(i.Metadata.Labels); n > MaxLabels {
		errs = append(errs, fmt.Errorf("instance %q has %d labels; at most %d", i.ID, n, MaxLabels))
	}
	if w := i.Metadata.Weight; w > MaxWeight {
		errs = append(errs, fmt.Errorf("instance %q has weight %d; at most %d", i.ID, w, MaxWeight))
	}
	return errors.Join(errs...)
}

// Prefix is the key prefix under which every instance of service is
// registered. It ends in '/', so "hello" never matches "helloworld".
func Prefix(namespace, service string) string {
	return namespace + "/" + service + "/"
}

// Key is the etcd key of one instance: <namespace>/<service>/<id>.
func Key(namespace string, i Instance) string {
	return Prefix(namespace, i.Service) + i.ID
}

// record is the value format of etcd's naming/endpoints package, so that
// etcd's own resolver and `etcdctl get --prefix` read what rollcall writes.
type record struct {
	Op       uint8           `json:"Op"`
	Addr     string          `json:"Addr"`
	Metadata json.RawMessage `json:"Metadata,omitempty"`
}

// Encode returns the etcd value for i.
func Encode(i Instance) ([]byte, error) {
	if err := i.Validate(); err != nil {
		return nil, err
	}
	md, err := json.Marshal(i.Metadata)
	if err != nil {
		return nil, fmt.Errorf("encode instance %q: %w", i.ID, err)
	}
	v, err := json.Marshal(record{Addr: i.Addr, Metadata: md})
	if err != nil {
		return nil, fmt.Errorf("encode instance %q: %w", i.ID, err)
	}
	if len(v) > MaxValueBytes {
		return nil, fmt.Errorf("instance %q encodes to %d bytes; at most %d", i.ID, len(v), MaxValueBytes)
	}
	return v, nil
}

// Decode parses the value stored at key, which must lie under
// Prefix(namespace, service). The error names the key and what is wrong.
func Decode(namespace, service, key string, value []byte) (Instance, error) {
	id, ok := strings.CutPrefix(key, Prefix(namespace, service))
	if !ok {
		return Instance{}, fmt.Errorf("key %s is not under %q", shorten(key), Prefix(namespace, service))
	}
	if err := ValidateID(id); err != nil {
		return Instance{}, fmt.Errorf("key %s: %w", shorten(key), err)
	}
	if len(value) > MaxValueBytes {
		return Instance{}, fmt.Errorf("key %s: value of %d bytes exceeds %d", shorten(key), len(value), MaxValueBytes)
	}
	var r record
	if err := json.Unmarshal(value, &r); err != nil {
		return Instance{}, fmt.Errorf("key %s: value is not an endpoint record: %w", shorten(key), err)
	}
	if r.Op != 0 {
		return Instance{}, fmt.Errorf("key %s: endpoint record has Op %d, want 0 (add)", shorten(key), r.Op)
	}
	if err := ValidateAddr(r.Addr); err != nil {
		return Instance{}, fmt.Errorf("key %s: %w", shorten(key), err)
	}
	i := Instance{Service: service, ID: id, Addr: r.Addr}
	// Metadata that is not rollcall's shape (etcd's endpoints package allows
	// any JSON) leaves the instance usable, just without metadata.
	if len(r.Metadata) > 0 && json.Unmarshal(r.Metadata, &i.Metadata) != nil {
		i.Metadata = Metadata{}
	}
	if n := len(i.Metadata.Labels); n > MaxLabels {
		return Instance{}, fmt.Errorf("key %s: %d labels; at most %d", shorten(key), n, MaxLabels)
	}
	if w := i.Metadata.Weight; w > MaxWeight {
		return Instance{}, fmt.Errorf("key %s: weight %d; at most %d", shorten(key), w, MaxWeight)
	}
	return i, nil
}

// shorten quotes s for an error message, cut to a readable length: keys
// and IDs read from etcd may be garbage of any size.
func shorten(s string) string {
	const max = 100
	if len(s) <= max {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%q... (%d bytes)", s[:max], len(s))
}
