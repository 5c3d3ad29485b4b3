// Package discovery lets gRPC services find each other through etcd: a
// server registers itself (package register), a client resolves a service
// name into the instances registered now and balances each call over them
// (package resolve).
//
// The two calls a service writes, given one shared etcd client from
// NewEtcdClient:
//
//	reg, err := register.New(etcd, discovery.Instance{Service: "greeter", Addr: "10.0.0.7:50051"})
//	defer reg.Close(ctx)
//
//	rb, err := resolve.NewBuilder(etcd)
//	conn, err := grpc.NewClient(rb.Target("greeter"), grpc.WithResolvers(rb), ...)
//
// Each instance is one key, <namespace>/<service>/<id> (namespace
// DefaultNamespace unless set), whose value is the JSON record of etcd's
// naming/endpoints package: {"Op":0,"Addr":"host:port","Metadata":{...}}.
// etcdctl and etcd's own resolver read it; Metadata carries version, zone,
// weight and labels to rollcall's balancers.
//
// Values in etcd are untrusted: Decode rejects, with an error naming the
// key, anything that is not a valid record, so one bad value never hides
// the valid instances.
package discovery
