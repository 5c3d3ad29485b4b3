# The demo client: one static binary (CGO_ENABLED=0) on an empty base.
# `go run mage.go docker:build` builds the binary into this image's build
# context and tags the image rollcall/client:dev.
FROM scratch
COPY client /client
USER 65532:65532
ENTRYPOINT ["/client"]
