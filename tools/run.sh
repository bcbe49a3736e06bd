#!/usr/bin/env bash
# Quick start 1: install what is missing, build (release), make the example models, push them
# into ./models (once), and serve pilotlight.yaml on 127.0.0.1:8080. Extra args go to `serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release
/usr/bin/python3 tools/make_models.py --out build/models
BIN=build/release/pilotlight
for spec in digits:1.0.0 tiny_mlp:1.0.0; do
  name=${spec%%:*}; version=${spec#*:}
  if [ ! -f "models/$name/versions/$version/manifest.json" ]; then
    "$BIN" model push "build/models/$name.onnx" --name "$name" --version "$version" --promote --store file://./models
  fi
done
echo "pilotlight: serving on http://127.0.0.1:8080 — try:"
echo "  curl -s localhost:8080/v1/infer -H 'content-type: application/json' -d @examples/digits-request.json"
exec "$BIN" serve --config pilotlight.yaml "$@"
