# etcd, built from the Go module version that the pkg module pins (the same
# as the client library), static (CGO_ENABLED=0), on an empty base: there is
# no shell and no etcdctl in this image, so probes and checks come from
# outside (HTTP /readyz and /livez, or the etcd API).
# `go run mage.go docker:build` builds the binary into this image's build
# context, with the empty directory data/, and tags the image rollcall/etcd:dev.
FROM scratch
COPY etcd /etcd
# The parent of etcd's --data-dir (/var/lib/etcd/data), writable by the
# non-root user; etcd creates the data directory itself, mode 0700. A volume
# mounted here starts with this ownership.
COPY --chown=65532:65532 data /var/lib/etcd
USER 65532:65532
# client, peer
EXPOSE 2379 2380
ENTRYPOINT ["/etcd"]
