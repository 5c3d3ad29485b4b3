package resolve

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/rollcall/rollcall/pkg/discovery"
)

// DefaultSnapshotMaxAge is how old a snapshot may be and still be used,
// unless WithSnapshots says otherwise.
const DefaultSnapshotMaxAge = time.Hour

// WithSnapshots keeps, in dir, a file per service with the last list read
// from etcd, written atomically at each change. A resolver that cannot
// reach etcd at start (a process restarted during an etcd outage) starts
// from that file when it is at most maxAge old (0: DefaultSnapshotMaxAge),
// and replaces it with etcd's list as soon as etcd answers. The instances
// of a snapshot get calls only once their connections are ready and, with
// call.Dial, their health service says SERVING, as any others.
//
// Turn it on for processes that must serve while etcd is down at their
// start; leave it off where a stale list is worse than none (instances on
// reused addresses that serve something else without a health service).
func WithSnapshots(dir string, maxAge time.Duration) Option {
	return func(b *Builder) {
		if maxAge <= 0 {
			maxAge = DefaultSnapshotMaxAge
		}
		b.snapshots = &snapshots{dir: dir, maxAge: maxAge}
	}
}

// snapshots reads and writes the snapshot files of a Builder.
type snapshots struct {
	dir    string
	maxAge time.Duration
}

// snapshotFile is a snapshot on disk: the etcd keys and values of the
// list, decoded again on reading, as values from etcd are.
type snapshotFile struct {
	Written time.Time         `json:"written"`
	Keys    map[string]string `json:"keys"`
}

func (s *snapshots) path(namespace, service string) string {
	return filepath.Join(s.dir, url.PathEscape(namespace), service+".json")
}

// save writes list atomically: a reader sees the old file or the new one.
func (s *snapshots) save(namespace, service string, list []discovery.Instance) error {
	f := snapshotFile{Written: time.Now(), Keys: make(map[string]string, len(list))}
	for _, inst := range list {
		value, err := discovery.Encode(inst)
		if err != nil {
			return err
		}
		f.Keys[discovery.Key(namespace, inst)] = string(value)
	}
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	path := s.path(namespace, service)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("snapshot directory: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+service+"-*.tmp")
	if err != nil {
		return fmt.Errorf("snapshot of %s: %w", service, err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename, there is nothing to remove
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

var errSnapshotTooOld = errors.New("snapshot too old")

// load reads a service's snapshot, refusing one older than maxAge. Values
// that do not decode are skipped, as from etcd.
func (s *snapshots) load(namespace, service string, now time.Time) ([]discovery.Instance, time.Time, error) {
	path := s.path(namespace, service)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, time.Time{}, err
	}
	var f snapshotFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, time.Time{}, fmt.Errorf("snapshot %s: %w", path, err)
	}
	if age := now.Sub(f.Written); age > s.maxAge || age < -time.Minute {
		return nil, f.Written, fmt.Errorf("%w: %s was written %v ago, the limit is %v", errSnapshotTooOld, path, age.Round(time.Second), s.maxAge)
	}
	list := make([]discovery.Instance, 0, len(f.Keys))
	for key, value := range f.Keys {
		if inst, err := discovery.Decode(namespace, service, key, []byte(value)); err == nil {
			list = append(list, inst)
		}
	}
	return list, f.Written, nil
}

// startFromSnapshot publishes the saved list, when there is one young
// enough, because etcd could not be read (err) before any list; it
// reports whether it did. It reads the file once: a missing or unusable
// one is not read again at every retry. etcd's list replaces it when etcd answers.
func (w *serviceWatch) startFromSnapshot(err error) bool {
	if w.snapshots == nil || w.snapshotTried {
		return false
	}
	w.snapshotTried = true
	list, written, lerr := w.snapshots.load(w.ns, w.service, time.Now())
	if lerr != nil {
		if !errors.Is(lerr, fs.ErrNotExist) {
			w.log.Warn("etcd is unreachable and the snapshot of the list cannot be used", "err", lerr)
		}
		return false
	}
	slices.SortFunc(list, func(a, b discovery.Instance) int { return strings.Compare(a.ID, b.ID) })
	w.log.Warn("etcd is unreachable: starting from the list saved before, until etcd answers",
		"instances", len(list), "saved", written.Format(time.RFC3339), "age", time.Since(written).Round(time.Second), "err", err)
	w.saved = list
	w.publishList(list)
	return true
}

// save writes list to the snapshot when it changed; a failure is logged
// once until a write succeeds again.
func (w *serviceWatch) save(list []discovery.Instance) {
	if w.snapshots == nil || w.saved != nil && slices.EqualFunc(list, w.saved, func(a, b discovery.Instance) bool { return a.Equal(b) }) {
		return
	}
	if err := w.snapshots.save(w.ns, w.service, list); err != nil {
		if !w.saveErr {
			w.log.Warn("cannot save the snapshot of the list", "err", err)
		}
		w.saveErr = true
		return
	}
	w.saved, w.saveErr = list, false
}
