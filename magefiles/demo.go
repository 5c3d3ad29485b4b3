package main

import "github.com/magefile/mage/mg"

// Demo shows what discovery does when instances come and go, one command each: on the stack of a running up, else on one of its own.
type Demo mg.Namespace

// Kill kills -9 one greeter (greeter-2 on a fresh stack): calls go on with no error, and its key leaves etcd within the TTL.
func (Demo) Kill() error { return demostack("kill") }

// Scale starts one more greeter: it gets its share of calls within a second of registering.
func (Demo) Scale() error { return demostack("scale") }

// Rolling replaces every greeter in turn (start the new one, then SIGTERM the old): no call fails.
func (Demo) Rolling() error { return demostack("rolling") }

// BadDeploy starts a greeter that answers INTERNAL to every call: the client's policy ejects it after five failures in a row.
func (Demo) BadDeploy() error { return demostack("bad-deploy") }
