#!/usr/bin/env bash
# Regenerates src/fastpath/gen from proto/ (run by `make proto`); the output is committed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/../src/fastpath/gen"
py=${PYTHON:-python3}
tmp=$(mktemp -d)
"$py" -m grpc_tools.protoc -I"$here" --python_out="$tmp" --pyi_out="$tmp" --grpc_python_out="$tmp" \
  "$here/inference/grpc_service.proto" "$here/fastpath/v1/control.proto"
mkdir -p "$out"
cp "$tmp"/inference/* "$tmp"/fastpath/v1/* "$out"/
sed -i 's/^from inference import/from fastpath.gen import/; s/^from fastpath\.v1 import/from fastpath.gen import/' "$out"/*_grpc.py
printf '"""Generated gRPC/protobuf modules (proto/generate.sh); do not edit."""\n' > "$out/__init__.py"
rm -rf "$tmp"
