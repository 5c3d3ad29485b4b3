// Package controlplane is rollcall's lookaside model: an xDS control plane
// that tells proxyless gRPC clients, in any language, which instances are
// registered in etcd. It reads each service with the resolver's own
// list-and-watch (resolve.Builder.Follow), so it keeps the last good list
// while etcd is unreachable and never serves an empty cluster because of
// an etcd error, and it serves rollcall's client defaults as xDS: retries
// of idempotent methods, outlier detection, the balancing policy.
package controlplane

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
)

// DefaultFirstListWait bounds how long a client's first request for a
// service waits for that service's first list from etcd.
const DefaultFirstListWait = 5 * time.Second

// MaxServices bounds how many services one control plane follows: the
// names come from clients, and each costs an etcd watch.
const MaxServices = 1024

// Config says what a ControlPlane serves.
type Config struct {
	Defaults Defaults
	// Services are followed from the start; any other service is
	// followed from the first request that names it.
	Services []string
	// FirstListWait: a request naming a service not followed yet waits
	// up to this for its first list, so that the answer holds it rather
	// than tell the client it does not exist. 0 means
	// DefaultFirstListWait.
	FirstListWait time.Duration

	served func(service string, instances int) // told of each snapshot, for tests
}

// ControlPlane serves the services registered in etcd over ADS (state of
// the world). Every client gets the same resources, whatever its node.
type ControlPlane struct {
	rb    *resolve.Builder
	cfg   Config
	log   *slog.Logger
	cache cachev3.SnapshotCache
	ads   serverv3.Server
	// endStreams ends every ADS stream: a stopping server's GracefulStop
	// would otherwise wait for them, and they never end by themselves.
	endStreams context.CancelFunc

	mu       sync.Mutex
	closed   bool
	services map[string]*followed
	updates  uint64 // snapshots set, for Updates
	changed  chan struct{}
}

// followed is one service the control plane reads from etcd.
type followed struct {
	stop   func()
	listed chan struct{} // closed at the service's first list
	res    *serviceResources
}

// allNodes: one snapshot for every client.
type allNodes struct{}

func (allNodes) ID(*core.Node) string { return "" }

// New returns a control plane reading etcd through rb; Register its ADS
// service on a gRPC server, and Close it after the server stopped.
func New(rb *resolve.Builder, cfg Config, log *slog.Logger) (*ControlPlane, error) {
	if rb == nil {
		return nil, errors.New("controlplane: nil resolve.Builder")
	}
	if err := cfg.Defaults.Validate(); err != nil {
		return nil, err
	}
	for _, s := range cfg.Services {
		if err := discovery.ValidateService(s); err != nil {
			return nil, err
		}
	}
	if cfg.FirstListWait <= 0 {
		cfg.FirstListWait = DefaultFirstListWait
	}
	cp := &ControlPlane{
		rb:       rb,
		cfg:      cfg,
		log:      log,
		cache:    cachev3.NewSnapshotCache(false, allNodes{}, cacheLog{log}),
		services: map[string]*followed{},
		changed:  make(chan struct{}),
	}
	var streams context.Context
	streams, cp.endStreams = context.WithCancel(context.Background())
	cp.ads = serverv3.NewServer(streams, cp.cache, serverv3.CallbackFuncs{StreamRequestFunc: cp.onRequest})
	for _, s := range cfg.Services {
		if _, err := cp.follow(s); err != nil {
			cp.Close()
			return nil, err
		}
	}
	return cp, nil
}

// Register adds the ADS service to s.
func (cp *ControlPlane) Register(s grpc.ServiceRegistrar) {
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(s, cp.ads)
}

// EndStreams ends every ADS stream, and those that open later at once,
// so that a stopping server stops without waiting for them. Clients keep
// the resources they hold and connect to this one again once it is back
// (grpc-go moves a running client to the next control plane of its
// bootstrap only for resources it has never received).
func (cp *ControlPlane) EndStreams() { cp.endStreams() }

// Close ends the streams, stops reading etcd and waits for it.
func (cp *ControlPlane) Close() {
	cp.endStreams()
	cp.mu.Lock()
	cp.closed = true
	all := make([]*followed, 0, len(cp.services))
	for _, f := range cp.services {
		all = append(all, f)
	}
	cp.mu.Unlock()
	for _, f := range all {
		f.stop()
	}
}

// Updates returns how many snapshots were set so far, and a channel
// closed at the next: tests and benchmarks await a change with it.
func (cp *ControlPlane) Updates() (uint64, <-chan struct{}) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.updates, cp.changed
}

// follow starts reading service unless it is read already; it returns
// the channel closed at its first list.
func (cp *ControlPlane) follow(service string) (<-chan struct{}, error) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if f, ok := cp.services[service]; ok {
		return f.listed, nil
	}
	if cp.closed {
		return nil, errors.New("controlplane: closed")
	}
	if len(cp.services) >= MaxServices {
		return nil, fmt.Errorf("service %q not served: %d services followed already, the limit", service, MaxServices)
	}
	f := &followed{listed: make(chan struct{})}
	stop, err := cp.rb.Follow(service, func(instances []discovery.Instance) { cp.update(service, f, instances) })
	if err != nil {
		return nil, err
	}
	f.stop = stop
	cp.services[service] = f
	cp.log.Info("following a service in etcd", "service", service)
	return f.listed, nil
}

// onRequest follows every service a client names, and has a request for
// one not followed yet wait for its first list: answered without it, a
// client would take the service for deleted.
func (cp *ControlPlane) onRequest(_ int64, req *discoverygrpc.DiscoveryRequest) error {
	var wait []<-chan struct{}
	for _, name := range req.GetResourceNames() {
		listed, err := cp.follow(name)
		if err != nil {
			cp.log.Warn("not serving a requested resource", "type", req.GetTypeUrl(), "name", name, "err", err)
			continue
		}
		wait = append(wait, listed)
	}
	timer := time.NewTimer(cp.cfg.FirstListWait)
	defer timer.Stop()
	for _, listed := range wait {
		select {
		case <-listed:
		case <-timer.C:
			return nil
		}
	}
	return nil
}

// update turns service's new list into its resources and sets a new
// snapshot of every service.
func (cp *ControlPlane) update(service string, f *followed, instances []discovery.Instance) {
	res := resourcesOf(service, instances, cp.cfg.Defaults)
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.closed {
		return
	}
	f.res = &res
	if err := cp.cache.SetSnapshot(context.Background(), "", cp.snapshot()); err != nil {
		cp.log.Error("cannot set the xDS snapshot", "err", err)
	}
	cp.updates++
	close(cp.changed)
	cp.changed = make(chan struct{})
	select {
	case <-f.listed:
	default:
		close(f.listed)
	}
	if cp.cfg.served != nil {
		cp.cfg.served(service, len(instances))
	}
	cp.log.Debug("service updated", "service", service, "instances", len(instances))
}

// snapshot holds every listed service's resources. Each type's version is
// a hash of its content: a change of one service's instances leaves the
// other types as clients have them, and replicas that read the same etcd
// serve the same versions, so a client that moves to another replica
// gets nothing new.
func (cp *ControlPlane) snapshot() *cachev3.Snapshot {
	byType := map[string][]types.Resource{}
	for _, name := range slices.Sorted(maps.Keys(cp.services)) {
		res := cp.services[name].res
		if res == nil {
			continue
		}
		byType[resourcev3.ListenerType] = append(byType[resourcev3.ListenerType], res.listener)
		byType[resourcev3.RouteType] = append(byType[resourcev3.RouteType], res.route)
		byType[resourcev3.ClusterType] = append(byType[resourcev3.ClusterType], res.cluster)
		byType[resourcev3.EndpointType] = append(byType[resourcev3.EndpointType], res.cla)
	}
	snap := &cachev3.Snapshot{}
	for typeURL, items := range byType {
		snap.Resources[cachev3.GetResponseType(typeURL)] = cachev3.NewResources(contentVersion(items), items)
	}
	return snap
}

// contentVersion hashes items, marshalled deterministically.
func contentVersion(items []types.Resource) string {
	h := fnv.New64a()
	opts := proto.MarshalOptions{Deterministic: true}
	for _, item := range items {
		b, err := opts.Marshal(item)
		if err != nil {
			panic(err) // messages built here always marshal
		}
		h.Write(binary.AppendUvarint(nil, uint64(len(b))))
		h.Write(b)
	}
	return fmt.Sprintf("%016x", h.Sum64())
}

// cacheLog sends the snapshot cache's log to slog; its debug lines (a
// line per response) stay at debug.
type cacheLog struct{ log *slog.Logger }

func (l cacheLog) Debugf(format string, args ...any) { l.log.Debug(fmt.Sprintf(format, args...)) }
func (l cacheLog) Infof(format string, args ...any)  { l.log.Debug(fmt.Sprintf(format, args...)) }
func (l cacheLog) Warnf(format string, args ...any)  { l.log.Warn(fmt.Sprintf(format, args...)) }
func (l cacheLog) Errorf(format string, args ...any) { l.log.Error(fmt.Sprintf(format, args...)) }
