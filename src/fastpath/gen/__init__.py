"""Generated gRPC/protobuf modules (proto/generate.sh); do not edit."""
