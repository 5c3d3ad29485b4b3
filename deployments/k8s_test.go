package deployments_test

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/rollcall/rollcall/pkg/liveness"
	"github.com/rollcall/rollcall/pkg/serve"
)

// Kubernetes cannot run here, so this test reads every manifest the way the
// API server would (strictly: an unknown or misspelt field fails) and checks
// what must agree with the code: images, ports, health service names,
// environment names, shutdown timing, etcd's flags and membership.

// manifestKinds are the kinds deployments/k8s may hold, by apiVersion and kind.
var manifestKinds = map[string]func() any{
	"apps/v1 Deployment":            func() any { return &appsv1.Deployment{} },
	"apps/v1 StatefulSet":           func() any { return &appsv1.StatefulSet{} },
	"v1 Service":                    func() any { return &corev1.Service{} },
	"policy/v1 PodDisruptionBudget": func() any { return &policyv1.PodDisruptionBudget{} },
}

// wantReplicas is what issue #7 asks of each workload.
var wantReplicas = map[string]int32{"etcd": 3, "greeter": 3}

// workload is a Deployment or a StatefulSet: what runs pods.
type workload struct {
	where    string
	name     string
	replicas int32
	pod      corev1.PodTemplateSpec
	sts      *appsv1.StatefulSet
	deploy   *appsv1.Deployment
}

type manifests struct {
	workloads []workload
	services  []*corev1.Service
	pdbs      []*policyv1.PodDisruptionBudget
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

func loadManifests(t *testing.T) manifests {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("k8s", "*.y*ml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifest in k8s/: %v", err)
	}
	var m manifests
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range docSeparator.Split(string(data), -1) {
			where := fmt.Sprintf("%s#%d", file, i+1)
			if js, err := yaml.YAMLToJSON([]byte(doc)); err == nil && string(js) == "null" {
				continue // only comments
			}
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			newObj, ok := manifestKinds[tm.APIVersion+" "+tm.Kind]
			if !ok {
				t.Errorf("%s: %s %s is not a kind this test knows; add it to manifestKinds with its checks", where, tm.APIVersion, tm.Kind)
				continue
			}
			obj := newObj()
			if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			switch o := obj.(type) {
			case *appsv1.Deployment:
				m.workloads = append(m.workloads, workload{where: where, name: o.Name, replicas: replicas(o.Spec.Replicas), pod: o.Spec.Template, deploy: o})
			case *appsv1.StatefulSet:
				m.workloads = append(m.workloads, workload{where: where, name: o.Name, replicas: replicas(o.Spec.Replicas), pod: o.Spec.Template, sts: o})
			case *corev1.Service:
				m.services = append(m.services, o)
			case *policyv1.PodDisruptionBudget:
				m.pdbs = append(m.pdbs, o)
			}
		}
	}
	return m
}

func replicas(r *int32) int32 {
	if r == nil {
		return 1 // the API default
	}
	return *r
}

func TestManifests(t *testing.T) {
	m := loadManifests(t)
	imgs := images(t)
	for name, want := range wantReplicas {
		i := slices.IndexFunc(m.workloads, func(w workload) bool { return w.name == name })
		if i < 0 {
			t.Errorf("no workload named %s", name)
		} else if m.workloads[i].replicas != want {
			t.Errorf("%s: %d replicas, want %d", m.workloads[i].where, m.workloads[i].replicas, want)
		}
	}

	var etcd etcdCluster
	for _, w := range m.workloads {
		for _, c := range w.pod.Spec.Containers {
			checkImage(t, w, c, imgs)
			if imgs[c.Image] == "etcd" {
				if w.sts == nil {
					t.Errorf("%s: etcd runs in a %T, want a StatefulSet (stable names and volumes)", w.where, w.deploy)
					continue
				}
				etcd = checkEtcd(t, w, c, m)
			}
		}
	}
	if etcd.members == nil {
		t.Fatal("no etcd StatefulSet")
	}
	for _, w := range m.workloads {
		for _, c := range w.pod.Spec.Containers {
			if h, ok := serviceHelp(t, imgs[c.Image]); ok {
				checkServiceContainer(t, w, c, h, etcd)
			}
		}
	}
	checkSelectors(t, m)
}

// checkImage: an image `mage docker:build` makes, used as built (no
// registry to pull from), and no exec hook or probe (FROM scratch: no
// shell, no binaries but the one).
func checkImage(t *testing.T, w workload, c corev1.Container, imgs map[string]string) {
	t.Helper()
	where := w.where + " container " + c.Name
	if _, ok := imgs[c.Image]; !ok {
		t.Errorf("%s: image %q is not one `mage docker:build` makes (%v)", where, c.Image, slices.Sorted(maps.Keys(imgs)))
	}
	if c.ImagePullPolicy == corev1.PullAlways {
		t.Errorf("%s: imagePullPolicy Always, but the image is built locally, not pulled", where)
	}
	handlers := map[string]*corev1.ProbeHandler{}
	for name, p := range map[string]*corev1.Probe{"startupProbe": c.StartupProbe, "readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
		if p != nil {
			handlers[name] = &p.ProbeHandler
		}
	}
	for name, p := range handlers {
		if p.Exec != nil {
			t.Errorf("%s: %s runs a command, but the image is FROM scratch", where, name)
		}
	}
	if l := c.Lifecycle; l != nil {
		for name, h := range map[string]*corev1.LifecycleHandler{"postStart": l.PostStart, "preStop": l.PreStop} {
			if h != nil && h.Exec != nil {
				t.Errorf("%s: %s runs a command, but the image is FROM scratch; use the sleep action", where, name)
			}
		}
	}
}

// etcdCluster is what clients must be configured with.
type etcdCluster struct {
	members    map[string]bool // host of each member's client URL
	clientPort int
}

// checkEtcd parses each member's flags with etcd's own flag definitions
// and checks them against the StatefulSet, its Service and its PDB.
func checkEtcd(t *testing.T, w workload, c corev1.Container, m manifests) etcdCluster {
	t.Helper()
	sts := w.sts
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("%s: podManagementPolicy %q, want Parallel: a new cluster needs a quorum running before any member is ready", w.where, sts.Spec.PodManagementPolicy)
	}
	svcIdx := slices.IndexFunc(m.services, func(s *corev1.Service) bool { return s.Name == sts.Spec.ServiceName })
	if svcIdx < 0 {
		t.Fatalf("%s: serviceName %q: no such Service", w.where, sts.Spec.ServiceName)
	}
	if svc := m.services[svcIdx]; svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s: want headless (clusterIP None) with publishNotReadyAddresses, so members find each other before they are ready", svc.Name)
	}
	checkQuorumBudget(t, w, m.pdbs)

	port := func(name string) int {
		for _, p := range c.Ports {
			if p.Name == name {
				return int(p.ContainerPort)
			}
		}
		t.Fatalf("%s: etcd has no container port named %q", w.where, name)
		return 0
	}
	clientPort, peerPort := port("client"), port("peer")
	cluster := etcdCluster{members: map[string]bool{}, clientPort: clientPort}
	var wantCluster []string
	for i := range int(w.replicas) {
		member := fmt.Sprintf("%s-%d", sts.Name, i)
		host := member + "." + sts.Spec.ServiceName
		cluster.members[host] = true
		wantCluster = append(wantCluster, fmt.Sprintf("%s=http://%s:%d", member, host, peerPort))
	}
	slices.Sort(wantCluster)

	checkEnvNames(t, w.where+" container etcd", binaryHelp{}, envOf(c), strings.Join(c.Args, "\n"))
	for i := range int(w.replicas) {
		member := fmt.Sprintf("%s-%d", sts.Name, i)
		host := member + "." + sts.Spec.ServiceName
		where := fmt.Sprintf("%s member %s", w.where, member)
		fs, err := etcdFlags(expandArgs(t, c, member))
		if err != nil {
			t.Errorf("%s: %v", where, err)
			continue
		}
		flagValue := func(name string) string { return fs[name] }
		for _, tc := range []struct {
			flag     string
			wantHost string // "" for any
			wantPort int
		}{
			{"listen-client-urls", "", clientPort},
			{"listen-peer-urls", "", peerPort},
			{"advertise-client-urls", host, clientPort},
			{"initial-advertise-peer-urls", host, peerPort},
		} {
			urls, err := urlPorts(flagValue(tc.flag))
			if err != nil || len(urls) != 1 {
				t.Errorf("%s: --%s=%q: want one URL", where, tc.flag, flagValue(tc.flag))
				continue
			}
			if (tc.wantHost != "" && urls[0][0] != tc.wantHost) || urls[0][1] != strconv.Itoa(tc.wantPort) {
				t.Errorf("%s: --%s=%q, want host %q port %d", where, tc.flag, flagValue(tc.flag), tc.wantHost, tc.wantPort)
			}
		}
		got := strings.Split(flagValue("initial-cluster"), ",")
		slices.Sort(got)
		if !slices.Equal(got, wantCluster) {
			t.Errorf("%s: --initial-cluster lists %v, want every member of the StatefulSet: %v", where, got, wantCluster)
		}
		if dir := flagValue("data-dir"); !onClaimedVolume(sts, c, dir) {
			t.Errorf("%s: --data-dir=%q is not on a volume of the volumeClaimTemplates", where, dir)
		}
		if i == 0 {
			checkEtcdProbes(t, w.where, c, fs)
		}
	}
	return cluster
}

// checkQuorumBudget: a PodDisruptionBudget lets drains take etcd members
// only while a quorum stays.
func checkQuorumBudget(t *testing.T, w workload, pdbs []*policyv1.PodDisruptionBudget) {
	t.Helper()
	quorum := int(w.replicas)/2 + 1
	for _, pdb := range pdbs {
		if pdb.Spec.Selector == nil || !selects(pdb.Spec.Selector.MatchLabels, w.pod.Labels) {
			continue
		}
		switch {
		case pdb.Spec.MinAvailable != nil && pdb.Spec.MinAvailable.Type == intstr.Int && pdb.Spec.MinAvailable.IntValue() >= quorum:
		case pdb.Spec.MaxUnavailable != nil && pdb.Spec.MaxUnavailable.Type == intstr.Int && pdb.Spec.MaxUnavailable.IntValue() <= int(w.replicas)-quorum:
		default:
			t.Errorf("PodDisruptionBudget %s: want minAvailable >= %d (a quorum of %d) or maxUnavailable <= %d", pdb.Name, quorum, w.replicas, int(w.replicas)-quorum)
		}
		return
	}
	t.Errorf("%s: no PodDisruptionBudget selects its pods", w.where)
}

// checkEtcdProbes: HTTP probes (the image has no etcdctl) on a port where
// etcd serves /readyz and /livez.
func checkEtcdProbes(t *testing.T, where string, c corev1.Container, fs map[string]string) {
	t.Helper()
	served := map[int]bool{}
	for _, name := range []string{"listen-client-urls", "listen-metrics-urls"} {
		urls, err := urlPorts(fs[name])
		if err != nil {
			t.Errorf("%s: --%s: %v", where, name, err)
		}
		for _, u := range urls {
			if n, err := strconv.Atoi(u[1]); err == nil {
				served[n] = true
			}
		}
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		paths []string
	}{
		{"startupProbe", c.StartupProbe, []string{"/readyz", "/livez", "/health"}},
		{"readinessProbe", c.ReadinessProbe, []string{"/readyz", "/health"}},
		{"livenessProbe", c.LivenessProbe, []string{"/livez", "/health"}},
	} {
		if p.probe == nil {
			if p.name != "startupProbe" {
				t.Errorf("%s: etcd has no %s", where, p.name)
			}
			continue
		}
		get := p.probe.HTTPGet
		if get == nil {
			t.Errorf("%s: etcd %s: want an HTTP probe", where, p.name)
			continue
		}
		port, ok := containerPort(c, get.Port)
		if !ok || !served[port] {
			t.Errorf("%s: etcd %s on port %s, where etcd does not listen for HTTP (it does on %v)", where, p.name, get.Port.String(), served)
		}
		if !slices.Contains(p.paths, get.Path) {
			t.Errorf("%s: etcd %s on path %q, want one of %v", where, p.name, get.Path, p.paths)
		}
	}
}

// checkServiceContainer checks a container of one of this repository's
// services against what its binary's -h says.
func checkServiceContainer(t *testing.T, w workload, c corev1.Container, h binaryHelp, etcd etcdCluster) {
	t.Helper()
	where := w.where + " container " + c.Name
	env := envOf(c)
	refs := strings.Join(slices.Concat(slices.Collect(maps.Values(env)), c.Command, c.Args), "\n")
	checkEnvNames(t, where, h, env, refs)
	checkEtcdEndpoints(t, where, h.value(env, "etcd-endpoints"), etcd)
	// Metrics, when the binary has them and they are on: a port to scrape.
	if addr := h.value(env, "metrics-listen"); addr != "" {
		_, port, err := splitHostPort(addr)
		if err != nil || !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return int(p.ContainerPort) == port }) {
			t.Errorf("%s: metrics on %q, which is not among its container ports %v", where, addr, c.Ports)
		}
	}

	checkZone(t, where, h, env)

	if _, listens := h.defaults["listen"]; !listens {
		return
	}
	_, port, err := splitHostPort(h.value(env, "listen"))
	if err != nil {
		t.Fatalf("%s: listen address: %v", where, err)
	}
	if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return int(p.ContainerPort) == port }) {
		t.Errorf("%s: listens on %d, which is not among its container ports %v", where, port, c.Ports)
	}
	advertise := h.value(env, "advertise")
	if _, aport, err := splitHostPort(advertise); err != nil || aport != port {
		t.Errorf("%s: advertises %q; want the pod's address with the listen port %d (the default, 127.0.0.1, is no use to other pods)", where, advertise, port)
	}

	// Readiness: the service name, SERVING from start to SIGTERM. Liveness:
	// pkg/serve's liveness name, SERVING while the process answers at all.
	service := h.value(env, "service")
	checkGRPCProbe(t, where, "readinessProbe", c.ReadinessProbe, port, []string{service})
	checkGRPCProbe(t, where, "livenessProbe", c.LivenessProbe, port, []string{liveness.Service})

	// Stopping: preStop, then SIGTERM: revoke, drain, graceful stop.
	stop := serve.RevokeTimeout + h.duration(t, env, "drain-delay") + h.duration(t, env, "stop-timeout")
	var preStop time.Duration
	if l := c.Lifecycle; l == nil || l.PreStop == nil || l.PreStop.Sleep == nil {
		t.Errorf("%s: no preStop sleep", where)
	} else {
		preStop = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
	}
	grace := 30 * time.Second // the API default
	if g := w.pod.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	if grace < preStop+stop {
		t.Errorf("%s: terminationGracePeriodSeconds %v < preStop %v + revoke bound %v + DRAIN_DELAY + STOP_TIMEOUT (%v): the kubelet would kill calls in flight",
			where, grace, preStop, serve.RevokeTimeout, preStop+stop)
	}
	// Even a kubelet that probed a terminating pod (before 1.25) must not
	// kill it mid-drain: failing liveness takes longer than stopping.
	if p := c.LivenessProbe; p != nil {
		window := time.Duration(orDefault(p.PeriodSeconds, 10)*orDefault(p.FailureThreshold, 3)) * time.Second
		if window <= stop {
			t.Errorf("%s: liveness fails after %v, within the %v a stopping server may take", where, window, stop)
		}
	}
	if d := w.deploy; d != nil {
		ru := d.Spec.Strategy.RollingUpdate
		if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.String() != "0" && ru.MaxUnavailable.String() != "0%" {
			t.Errorf("%s: want a RollingUpdate with maxUnavailable 0: a new instance joins before an old one leaves", w.where)
		}
	}
}

// zoneLabel is where the downward API reads the node's zone: the API
// server copies the node's topology.kubernetes.io/zone label onto the pod
// when it binds it to the node (KEP-4742).
const zoneLabel = "metadata.labels['topology.kubernetes.io/zone']"

// checkZone: a binary with a -zone flag (the client's zone, an
// instance's registered zone) has it from the node's zone label, through
// the variable it reads for it.
func checkZone(t *testing.T, where string, h binaryHelp, env map[string]string) {
	t.Helper()
	for variable, flagName := range h.env {
		if flagName != "zone" {
			continue
		}
		if got := env[variable]; got != "<"+zoneLabel+">" {
			t.Errorf("%s: %s is %q; want it from the downward API's %s, for zone-aware routing", where, variable, got, zoneLabel)
		}
		return
	}
	t.Errorf("%s: the binary has no -zone flag with an environment variable", where)
}

func orDefault(v, def int32) int32 {
	if v == 0 {
		return def
	}
	return v
}

// checkGRPCProbe: a gRPC probe of grpc.health.v1 on the listen port, for
// one of the service names pkg/serve sets.
func checkGRPCProbe(t *testing.T, where, name string, p *corev1.Probe, port int, services []string) {
	t.Helper()
	if p == nil || p.GRPC == nil {
		t.Errorf("%s: want a gRPC %s (grpc.health.v1)", where, name)
		return
	}
	if int(p.GRPC.Port) != port {
		t.Errorf("%s: %s on port %d, but the server listens on %d", where, name, p.GRPC.Port, port)
	}
	service := ""
	if p.GRPC.Service != nil {
		service = *p.GRPC.Service
	}
	if !slices.Contains(services, service) {
		t.Errorf("%s: %s asks for health service %q, want one of %q", where, name, service, services)
	}
}

// checkEtcdEndpoints: every endpoint is a member of the etcd StatefulSet
// on its client port, and every member is listed.
func checkEtcdEndpoints(t *testing.T, where, endpoints string, etcd etcdCluster) {
	t.Helper()
	seen := map[string]bool{}
	for ep := range strings.SplitSeq(endpoints, ",") {
		host, port, err := splitHostPort(strings.TrimSpace(ep))
		if err != nil || !etcd.members[host] || port != etcd.clientPort {
			t.Errorf("%s: etcd endpoint %q is not an etcd member's client address (%v, port %d)", where, ep, slices.Sorted(maps.Keys(etcd.members)), etcd.clientPort)
		}
		seen[host] = true
	}
	for m := range etcd.members {
		if !seen[m] {
			t.Errorf("%s: etcd endpoints %q leave out member %s", where, endpoints, m)
		}
	}
}

// checkSelectors: every Service and PodDisruptionBudget selects pods, and
// a Service's target ports are ports of those pods.
func checkSelectors(t *testing.T, m manifests) {
	t.Helper()
	for _, svc := range m.services {
		var pods []workload
		for _, w := range m.workloads {
			if selects(svc.Spec.Selector, w.pod.Labels) {
				pods = append(pods, w)
			}
		}
		if len(pods) == 0 {
			t.Errorf("Service %s: selector %v selects no workload's pods", svc.Name, svc.Spec.Selector)
			continue
		}
		for _, p := range svc.Spec.Ports {
			target := p.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(p.Port)
			}
			found := slices.ContainsFunc(pods, func(w workload) bool {
				return slices.ContainsFunc(w.pod.Spec.Containers, func(c corev1.Container) bool {
					_, ok := containerPort(c, target)
					return ok
				})
			})
			if !found {
				t.Errorf("Service %s port %s: target port %s is no container port of the pods it selects", svc.Name, p.Name, target.String())
			}
		}
	}
	for _, pdb := range m.pdbs {
		if pdb.Spec.Selector == nil || !slices.ContainsFunc(m.workloads, func(w workload) bool { return selects(pdb.Spec.Selector.MatchLabels, w.pod.Labels) }) {
			t.Errorf("PodDisruptionBudget %s selects no workload's pods", pdb.Name)
		}
	}
}

func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// containerPort resolves a probe's or Service's port, by name or number.
func containerPort(c corev1.Container, p intstr.IntOrString) (int, bool) {
	for _, cp := range c.Ports {
		if p.Type == intstr.String && cp.Name == p.StrVal || p.Type == intstr.Int && cp.ContainerPort == p.IntVal {
			return int(cp.ContainerPort), true
		}
	}
	return 0, false
}

// envOf maps a container's variables to their values; a value from the
// downward API reads as its field path.
func envOf(c corev1.Container) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			env[e.Name] = "<" + e.ValueFrom.FieldRef.FieldPath + ">"
		default:
			env[e.Name] = e.Value
		}
	}
	return env
}

// expandArgs does the kubelet's $(VAR) expansion of c's args for the pod
// named pod.
func expandArgs(t *testing.T, c corev1.Container, pod string) []string {
	t.Helper()
	env := envOf(c)
	for name, v := range env {
		if v == "<metadata.name>" {
			env[name] = pod
		}
	}
	var pairs []string
	for name, v := range env {
		pairs = append(pairs, "$("+name+")", v)
	}
	r := strings.NewReplacer(pairs...)
	out := make([]string, len(c.Args))
	for i, a := range c.Args {
		out[i] = r.Replace(a)
	}
	return out
}

// onClaimedVolume reports whether dir lies on a volume that a volume
// claim template of sts provides to c.
func onClaimedVolume(sts *appsv1.StatefulSet, c corev1.Container, dir string) bool {
	for _, vm := range c.VolumeMounts {
		claimed := slices.ContainsFunc(sts.Spec.VolumeClaimTemplates, func(p corev1.PersistentVolumeClaim) bool { return p.Name == vm.Name })
		if claimed && (dir == vm.MountPath || strings.HasPrefix(dir, strings.TrimSuffix(vm.MountPath, "/")+"/")) {
			return true
		}
	}
	return false
}
