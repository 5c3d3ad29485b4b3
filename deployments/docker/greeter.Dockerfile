# The greeter service: one static binary (CGO_ENABLED=0) on an empty base.
# `go run mage.go docker:build` builds the binary into this image's build
# context and tags the image rollcall/greeter:dev.
FROM scratch
COPY greeter /greeter
# Any non-root user will do: the binary writes no file.
USER 65532:65532
# gRPC: the greeter API, grpc.health.v1 and reflection (LISTEN_ADDR, default :50051).
EXPOSE 50051
ENTRYPOINT ["/greeter"]
