// Package access sets up etcd's authentication for rollcall with least
// privilege: each service gets an etcd user and role that may write only
// its own instances' keys (<namespace>/<service>/) and read only the
// prefixes of the services it calls. A service that tries to register
// under another service's name is then refused by etcd, and register says
// so (phase Denied) instead of retrying.
//
// Apply needs a client of etcd's root user (or of a user with the root
// role); Enable turns authentication on once the root user exists.
package access

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/pkg/discovery"
)

// Service is what one service may do in etcd.
type Service struct {
	// Namespace is the first key segment (discovery.DefaultNamespace if
	// empty).
	Namespace string
	// Name is the service the user registers as.
	Name string
	// Calls are the services whose instances it resolves.
	Calls []string
}

// Grant is one permission of a role, on a key prefix.
type Grant struct {
	Prefix string
	Write  bool // readwrite; read only otherwise
}

// Grants lists s's permissions: readwrite on its own prefix (register
// writes its key and watches it), read on each called service's prefix.
func (s Service) Grants() ([]Grant, error) {
	ns := s.Namespace
	if ns == "" {
		ns = discovery.DefaultNamespace
	}
	errs := []error{discovery.ValidateNamespace(ns), discovery.ValidateService(s.Name)}
	grants := []Grant{{Prefix: discovery.Prefix(ns, s.Name), Write: true}}
	for _, callee := range s.Calls {
		errs = append(errs, discovery.ValidateService(callee))
		if callee != s.Name {
			grants = append(grants, Grant{Prefix: discovery.Prefix(ns, callee)})
		}
	}
	return grants, errors.Join(errs...)
}

// User is the etcd user and role name of s: "<namespace>.<service>".
func (s Service) User() string {
	ns := s.Namespace
	if ns == "" {
		ns = discovery.DefaultNamespace
	}
	return ns + "." + s.Name
}

// Apply creates (or completes) s's role with its grants, and its user with
// password and that role. Running it again changes nothing. Permissions a
// role already has beyond s's grants are left alone.
func Apply(ctx context.Context, root *clientv3.Client, s Service, password string) error {
	grants, err := s.Grants()
	if err != nil {
		return err
	}
	name := s.User()
	if _, err := root.RoleAdd(ctx, name); err != nil && !errors.Is(err, rpctypes.ErrRoleAlreadyExist) {
		return fmt.Errorf("add etcd role %s: %w", name, err)
	}
	for _, g := range grants {
		perm := clientv3.PermissionType(authpb.READ)
		if g.Write {
			perm = clientv3.PermissionType(authpb.READWRITE)
		}
		if _, err := root.RoleGrantPermission(ctx, name, g.Prefix, clientv3.GetPrefixRangeEnd(g.Prefix), perm); err != nil {
			return fmt.Errorf("grant etcd role %s on %s: %w", name, g.Prefix, err)
		}
	}
	if _, err := root.UserAdd(ctx, name, password); err != nil {
		if !errors.Is(err, rpctypes.ErrUserAlreadyExist) {
			return fmt.Errorf("add etcd user %s: %w", name, err)
		}
		if _, err := root.UserChangePassword(ctx, name, password); err != nil {
			return fmt.Errorf("set password of etcd user %s: %w", name, err)
		}
	}
	if _, err := root.UserGrantRole(ctx, name, name); err != nil {
		return fmt.Errorf("give etcd user %s its role: %w", name, err)
	}
	return nil
}

// Enable creates etcd's root user with password (if missing) and turns
// authentication on. From then on every client must log in.
func Enable(ctx context.Context, c *clientv3.Client, rootPassword string) error {
	if _, err := c.RoleAdd(ctx, "root"); err != nil && !errors.Is(err, rpctypes.ErrRoleAlreadyExist) {
		return fmt.Errorf("add etcd role root: %w", err)
	}
	if _, err := c.UserAdd(ctx, "root", rootPassword); err != nil && !errors.Is(err, rpctypes.ErrUserAlreadyExist) {
		return fmt.Errorf("add etcd user root: %w", err)
	}
	if _, err := c.UserGrantRole(ctx, "root", "root"); err != nil {
		return fmt.Errorf("give etcd user root the root role: %w", err)
	}
	if _, err := c.AuthEnable(ctx); err != nil {
		return fmt.Errorf("enable etcd auth: %w", err)
	}
	return nil
}
