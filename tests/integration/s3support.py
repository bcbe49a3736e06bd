"""Helpers for tests against an S3-compatible object store.

``S3Server`` runs tests/integration/s3/s3server.js (s3rver 3.7.1 from npm, installed by
tools/setup.sh with `npm ci`) on a free loopback port, with SigV4 verification, conditional
PUTs, per-request records and fault injection turned on. Nothing is mocked: clients (boto3
here, pilotlight's libcurl client in the tests that use it) speak HTTP to it.

    server = S3Server().start(tmp_dir)          # bucket "models"
    c = server.client()                         # boto3, path style, SigV4, no retries
    upload_version(c, "models", "", "digits", "1.0.0", "build/models/digits.onnx")
    promote(c, "models", "", "digits", "1.0.0")
    env = {**support.CHILD_ENV, **server.env()} # what `pilotlight serve` needs
    server.count("GET", "digits/versions/1.0.0/model.onnx", 200)
    server.fault("digits/versions/1.0.0/model.onnx", "truncate", bytes=1000)
    server.stop()

Store documents are written the way src/store/model_store.cc writes them (manifest.json and
current.json, keys sorted, two-space indent, trailing newline), computed here with onnx and
hashlib, never by calling pilotlight.
"""

import datetime
import hashlib
import json
import secrets
import shutil
import signal
import string
import subprocess
import threading
import time
from pathlib import Path

import requests

S3_DIR = Path(__file__).resolve().parent / "s3"
LAUNCHER = S3_DIR / "s3server.js"
REGION = "us-east-1"
START_TIMEOUT = 20.0  # seconds until the server prints READY
STOP_TIMEOUT = 10.0   # seconds between SIGTERM and SIGKILL


class S3SetupError(RuntimeError):
    """The S3 server cannot be started (Node.js or its npm packages missing, or it failed)."""


def _random_credentials():
    alnum = string.ascii_uppercase + string.digits
    akid = "PLTEST" + "".join(secrets.choice(alnum) for _ in range(14))
    # Real secret access keys are 40 characters of [A-Za-z0-9/+].
    secret = "".join(secrets.choice(string.ascii_letters + string.digits + "/+") for _ in range(40))
    return akid, secret


def _new_session():
    s = requests.Session()
    s.trust_env = False  # never go through a proxy from the environment
    return s


class S3Server:
    """One s3server.js process.

    Options: ``buckets`` (created at start; the first is the default bucket of ``count``,
    ``fault``, ``url``…), ``access_key``/``secret_key`` (random per server unless given: a
    client that ignores its configured credentials fails), ``session_token`` (when set, every
    request must carry it as x-amz-security-token), ``verify_sigv4`` and ``cond_put`` (on by
    default), ``allow_anonymous`` (unsigned requests are refused with 403 AccessDenied unless
    set, as by a private bucket), ``extra_args`` for the launcher.
    """

    def __init__(self, buckets=("models",), access_key=None, secret_key=None,
                 session_token=None, verify_sigv4=True, cond_put=True, allow_anonymous=False,
                 extra_args=()):
        if isinstance(buckets, str):
            buckets = (buckets,)
        self.buckets = list(buckets)
        assert self.buckets, "S3Server needs at least one bucket"
        akid, secret = _random_credentials()
        self.access_key = access_key or akid
        self.secret_key = secret_key or secret
        self.session_token = session_token
        self.region = REGION
        self.verify_sigv4 = verify_sigv4
        self.cond_put = cond_put
        self.allow_anonymous = allow_anonymous
        self.extra_args = list(extra_args)
        self.proc = None
        self.endpoint = None
        self.dir = None
        self._http = _new_session()

    # ---------------------------------------------------------------- lifecycle
    @property
    def bucket(self):
        """The default bucket (the first one)."""
        return self.buckets[0]

    def start(self, dir):
        """Starts the server with its data, log and request records under `dir`; returns self."""
        node = shutil.which("node")
        if node is None:
            raise S3SetupError("node not found on PATH: run tools/setup.sh")
        for pkg in ("s3rver", "@smithy/signature-v4"):
            if not (S3_DIR / "node_modules" / pkg / "package.json").is_file():
                raise S3SetupError("%s is not installed in %s: run tools/setup.sh (npm ci there)"
                                   % (pkg, S3_DIR))
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / "s3server.log"
        self.records_path = self.dir / "requests.jsonl"
        creds = "%s:%s" % (self.access_key, self.secret_key)
        if self.session_token:
            creds += ":" + self.session_token
        cmd = [node, str(LAUNCHER), "--dir", str(self.data_dir), "--port", "0",
               "--address", "127.0.0.1", "--credentials", creds, "--log", str(self.records_path),
               "--silent", "--watch-stdin"]
        for b in self.buckets:
            cmd += ["--bucket", b]
        if self.verify_sigv4:
            cmd.append("--verify-sigv4")
        if self.cond_put:
            cmd.append("--cond-put")
        if self.allow_anonymous:
            cmd.append("--allow-anonymous")
        cmd += [str(a) for a in self.extra_args]
        self.cmd = cmd
        log = open(self.log_path, "wb")
        try:
            # stdin stays open: the server exits when it closes (when this process dies).
            self.proc = subprocess.Popen(cmd, cwd=str(S3_DIR), stdin=subprocess.PIPE, stdout=log,
                                         stderr=subprocess.STDOUT)
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            for line in self.log_text().splitlines():
                if line.startswith("READY http://"):
                    self.endpoint = line.split()[1].strip()
                    break
            if self.endpoint:
                break
            if self.proc.poll() is not None:
                raise S3SetupError("s3server.js exited with %s before READY:\n%s"
                                   % (self.proc.returncode, self.log_text()[-4000:]))
            if time.monotonic() > deadline:
                self.stop()
                raise S3SetupError("s3server.js printed no READY within %.0fs:\n%s"
                                   % (START_TIMEOUT, self.log_text()[-4000:]))
            time.sleep(0.05)
        self.host, self.port = self.endpoint[len("http://"):].rsplit(":", 1)
        self.port = int(self.port)
        return self

    def stop(self):
        """SIGTERM (SIGKILL after STOP_TIMEOUT); returns the exit code (None if not started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdin:
            self.proc.stdin.close()
        return self.proc.returncode

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        """The server's stdout+stderr so far (READY, SignatureDoesNotMatch details, crashes)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # ---------------------------------------------------------------- addressing
    def path(self, key, bucket=None):
        """'/bucket/key' as the server records it ('/bucket' for key "", the bucket itself:
        listings); a key starting with '/' is taken as a path already."""
        if key.startswith("/"):
            return key
        if not key:
            return "/" + (bucket or self.bucket)
        return "/%s/%s" % (bucket or self.bucket, key)

    def url(self, key, bucket=None):
        """Path-style URL of an object (the key is not percent-encoded: keep keys plain)."""
        return self.endpoint + self.path(key, bucket)

    def uri(self, prefix="", bucket=None):
        """The store URI for pilotlight: s3://bucket or s3://bucket/prefix."""
        prefix = prefix.strip("/")
        return "s3://%s%s" % (bucket or self.bucket, "/" + prefix if prefix else "")

    def env(self, base=None):
        """Environment variables an S3 client needs for this server. With `base` (a dict, e.g.
        support.CHILD_ENV), a copy of it without any other AWS_* variable, plus these."""
        ours = {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint,
        }
        if self.session_token:
            ours["AWS_SESSION_TOKEN"] = self.session_token
        if base is None:
            return ours
        env = {k: v for k, v in base.items() if not k.startswith("AWS_")}
        env.update(ours)
        return env

    # ---------------------------------------------------------------- clients
    def client(self, access_key=None, secret_key=None, session_token=None, retries=1, **config):
        """A boto3 S3 client for this server: path-style addressing, SigV4, region us-east-1,
        no proxy, and `retries` total attempts (1: every error is seen; counts are exact).
        Other keyword arguments go to botocore.config.Config."""
        import boto3
        from botocore.config import Config

        cfg = Config(signature_version="s3v4", s3={"addressing_style": "path"},
                     retries={"total_max_attempts": retries, "mode": "standard"}, proxies={},
                     **config)
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=self.region, config=cfg,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            aws_session_token=session_token if session_token is not None else self.session_token)

    def request(self, method, key, body=b"", headers=None, params=None, bucket=None,
                secret_key=None, sign=True, stream=False, timeout=30):
        """One raw HTTP request to an object (or to the bucket when key is ""), SigV4-signed
        by botocore with this server's credentials (or `secret_key`) unless sign=False.
        Returns the requests.Response (304/412/truncation and headers as sent)."""
        from urllib.parse import quote, urlencode

        url = self.endpoint + quote(self.path(key, bucket), safe="/~")
        if params:
            url += "?" + urlencode(sorted(params.items()), quote_via=quote)
        headers = dict(headers or {})
        if sign:
            from botocore.auth import S3SigV4Auth
            from botocore.awsrequest import AWSRequest
            from botocore.credentials import Credentials

            headers["x-amz-content-sha256"] = hashlib.sha256(body or b"").hexdigest()
            req = AWSRequest(method=method, url=url, data=body, headers=headers)
            S3SigV4Auth(Credentials(self.access_key, secret_key or self.secret_key,
                                    self.session_token), "s3", self.region).add_auth(req)
            headers = dict(req.headers.items())
        return self._http.request(method, url, data=body, headers=headers, stream=stream,
                                  timeout=timeout)

    # ---------------------------------------------------------------- records and faults
    def _control(self, verb, what, params=None):
        r = self._http.request(verb, self.endpoint + what, params=params, timeout=30)
        assert r.status_code in (200, 204), "%s %s: %d %s" % (verb, what, r.status_code, r.text)
        return r

    def stats(self):
        """{"requests": [record, ...], "counts": {"METHOD /bucket/key STATUS": n}}; a record:
        {seq, t, ms, method, path, bucket, key, query, status, auth, akid, ...} (see s3server.js)."""
        return self._control("GET", "/__stats").json()

    def reset(self):
        """Forgets the request records and clears pending faults (objects stay)."""
        self._control("POST", "/__reset")

    def records(self, method=None, key=None, status=None, bucket=None, **where):
        """The request records matching all the given filters, oldest first.
        key: an object key in `bucket` (default bucket), "" for bucket-level requests
        (listings), a '/bucket/key' path, or None for any. status: an int, a collection of
        ints, or None. where: other record fields that must be equal (fault="truncate", ...)."""
        out = []
        path = None if key is None else self.path(key, bucket)
        statuses = None if status is None else (
            {status} if isinstance(status, int) else set(status))
        for r in self.stats()["requests"]:
            if method is not None and r["method"] != method:
                continue
            if path is not None and r["path"] != path:
                continue
            if key is None and bucket is not None and r["bucket"] != bucket:
                continue
            if statuses is not None and r["status"] not in statuses:
                continue
            if any(r.get(k) != v for k, v in where.items()):
                continue
            out.append(r)
        return out

    def count(self, method, key, status=None, bucket=None, **where):
        """How many requests matched (see records()): count("GET", "digits/versions/1.0.0/
        model.onnx", 200) counts full downloads, status=304 revalidations, 206 ranged ones."""
        return len(self.records(method, key, status, bucket, **where))

    def fault(self, key, mode, bucket=None, **params):
        """Queues a fault for the next `times` (default 1, -1 = until reset) requests of
        `method` (default "GET", "*" = any) on that object (key "": on the bucket, i.e. its
        listings). Modes:
          "truncate" (bytes=N): headers with the full Content-Length, N body bytes, then the
                     connection closes (close="fin", the default: an orderly close, which
                     only a client that checks Content-Length notices, as libcurl and
                     botocore do and urllib3 1.x does not; close="rst": a reset, which may
                     also drop bytes already sent). Only a 200/206 response consumes it.
          "503" / "500" / any status: an S3 error answer (503 SlowDown, 500 InternalError).
          "delay" (ms=N): waits N ms before handling the request normally.
          "reset": closes the connection without answering.
        Faults on one object apply in the order they were queued."""
        q = {"path": self.path(key, bucket), "mode": str(mode)}
        q.update({k: str(v) for k, v in params.items()})
        self._control("POST", "/__fault", q)

    def faults(self):
        """Pending faults: {path: [{mode, method, times, bytes, ms}, ...]}."""
        return self._control("GET", "/__faults").json()

    # ---------------------------------------------------------------- objects
    def object_path(self, key, bucket=None):
        """Where the server keeps an object's bytes on disk (s3rver's filesystem layout)."""
        parts = key.split("/")
        return self.data_dir / (bucket or self.bucket) / Path(*parts[:-1]) / (
            parts[-1] + "._S3rver_object")


# --------------------------------------------------------------------------------------
# Object helpers (any boto3 client)
# --------------------------------------------------------------------------------------
_cond = threading.local()


def _add_conditional_headers(request, **kwargs):
    for k, v in getattr(_cond, "headers", {}).items():
        request.headers[k] = v


def put_object(client, bucket, key, body, if_match=None, if_none_match=None, **kwargs):
    """client.put_object with If-Match / If-None-Match (boto3 1.26 has no parameter for
    them). Raises botocore ClientError (412 PreconditionFailed) when the condition fails."""
    client.meta.events.register_first("before-sign.s3.PutObject", _add_conditional_headers,
                                      unique_id="pilotlight-conditional-put")
    headers = {}
    if if_match is not None:
        headers["If-Match"] = if_match
    if if_none_match is not None:
        headers["If-None-Match"] = if_none_match
    _cond.headers = headers
    try:
        return client.put_object(Bucket=bucket, Key=key, Body=body, **kwargs)
    finally:
        _cond.headers = {}


def get_object(client, bucket, key):
    """(bytes, ETag) of an object, or (None, None) when it does not exist."""
    from botocore.exceptions import ClientError

    try:
        r = client.get_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if e.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None, None
        raise
    return r["Body"].read(), r["ETag"]


def error_code(exc):
    """The S3 error code and HTTP status of a botocore ClientError: ("PreconditionFailed", 412)."""
    return exc.response["Error"].get("Code"), exc.response["ResponseMetadata"]["HTTPStatusCode"]


# --------------------------------------------------------------------------------------
# pilotlight's store documents
# --------------------------------------------------------------------------------------
# ONNX TensorProto element types pilotlight supports, by their canonical names (tensor.cc).
_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32",
           7: "int64", 9: "bool", 11: "float64", 12: "uint32", 13: "uint64"}


def now_rfc3339():
    """UTC now as NowRfc3339 writes it: 2026-11-23T12:00:00.123Z."""
    t = datetime.datetime.now(datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


def document_bytes(obj):
    """JSON the way pilotlight writes its documents (nlohmann::json::dump(2) + newline:
    keys sorted, two-space indent, UTF-8 unescaped)."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _model_bytes(model):
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    return Path(model).read_bytes()


def onnx_io(model):
    """(inputs, outputs) of an ONNX model (a path or its bytes) as manifest entries
    [{"name", "dtype", "shape"}], as ONNX Runtime reports them: graph inputs that are not
    initializers, dynamic dims (dim_param or no dim_value) as -1."""
    import onnx

    m = onnx.load_from_string(_model_bytes(model))
    initializers = {i.name for i in m.graph.initializer}

    def entry(vi):
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or tt.elem_type not in _DTYPES:
            raise ValueError("%s has an element type pilotlight does not support (%s)"
                             % (vi.name, onnx.helper.printable_type(vi.type)))
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim] \
            if tt.HasField("shape") else []
        return {"name": vi.name, "dtype": _DTYPES[tt.elem_type], "shape": shape}

    inputs = [entry(vi) for vi in m.graph.input if vi.name not in initializers]
    outputs = [entry(vi) for vi in m.graph.output]
    return inputs, outputs


def make_manifest(name, version, model, created_at=None, url=None):
    """manifest.json bytes for `model` (a path or bytes) stored as model.onnx; `url` adds the
    optional "url" of the file entry (fetch it from there instead of the version folder)."""
    data = _model_bytes(model)
    inputs, outputs = onnx_io(data)
    entry = {"path": "model.onnx", "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    if url:
        entry["url"] = url
    return document_bytes({
        "name": name,
        "version": version,
        "framework": "onnx",
        "created_at": created_at or now_rfc3339(),
        "files": [entry],
        "inputs": inputs,
        "outputs": outputs,
    })


def store_key(prefix, *parts):
    """prefix/part/part... with no empty segments ('' prefix = bucket root)."""
    segs = [p.strip("/") for p in (prefix,) + parts if p and p.strip("/")]
    return "/".join(segs)


def version_key(prefix, name, version, file="model.onnx"):
    return store_key(prefix, name, "versions", version, file)


def current_key(prefix, name):
    return store_key(prefix, name, "current.json")


def upload_version(client, bucket, prefix, name, version, model_path, created_at=None, url=None,
                   upload_model=True):
    """Writes <prefix>/<name>/versions/<version>/model.onnx, then manifest.json (last, as
    `pilotlight model push` does: a version without a manifest is invisible). `url` goes into
    the manifest's file entry; upload_model=False writes the manifest only. Returns the
    manifest bytes as stored."""
    data = _model_bytes(model_path)
    manifest = make_manifest(name, version, data, created_at, url)
    if upload_model:
        client.put_object(Bucket=bucket, Key=version_key(prefix, name, version), Body=data)
    client.put_object(Bucket=bucket, Key=version_key(prefix, name, version, "manifest.json"),
                      Body=manifest)
    return manifest


def read_current(client, bucket, prefix, name, with_etag=False):
    """<prefix>/<name>/current.json as a dict (None when absent); with_etag=True returns
    (dict, etag) / (None, None)."""
    data, etag = get_object(client, bucket, current_key(prefix, name))
    doc = None if data is None else json.loads(data)
    return (doc, etag) if with_etag else doc


def promote(client, bucket, prefix, name, version, pointer_sha="manifest", promoted_at=None):
    """Points <prefix>/<name>/current.json at `version`, like ModelStore::Promote: history =
    the previous current's history + the previous current (unless it is the same version).
    "sha256" is that of the version's manifest.json bytes as stored (pointer_sha="manifest")
    or of its model file (pointer_sha="model", what current.json held before the S3 store). Written with If-Match on the previous current.json's ETag (If-None-Match: * when
    there is none), so a concurrent promotion makes this raise ClientError 412.
    Returns the current.json bytes written."""
    manifest, _ = get_object(client, bucket, version_key(prefix, name, version, "manifest.json"))
    if manifest is None:
        raise ValueError("%s has no version %s in s3://%s/%s" % (name, version, bucket, prefix))
    if pointer_sha == "manifest":
        sha = hashlib.sha256(manifest).hexdigest()
    elif pointer_sha == "model":
        sha = json.loads(manifest)["files"][0]["sha256"]
    else:
        raise ValueError("pointer_sha must be 'manifest' or 'model'")
    cur, etag = read_current(client, bucket, prefix, name, with_etag=True)
    history = []
    if cur is not None:
        history = [{"version": h["version"], "promoted_at": h.get("promoted_at", "")}
                   for h in cur.get("history", [])]
        if cur["version"] != version:
            history.append({"version": cur["version"], "promoted_at": cur.get("promoted_at", "")})
    doc = document_bytes({"version": version, "sha256": sha,
                          "promoted_at": promoted_at or now_rfc3339(), "history": history})
    if etag is None:
        put_object(client, bucket, current_key(prefix, name), doc, if_none_match="*")
    else:
        put_object(client, bucket, current_key(prefix, name), doc, if_match=etag)
    return doc


def push_model(client, bucket, prefix, name, version, model_path, promote_it=True, **kwargs):
    """upload_version + promote (when promote_it); returns the manifest bytes."""
    manifest = upload_version(client, bucket, prefix, name, version, model_path)
    if promote_it:
        promote(client, bucket, prefix, name, version, **kwargs)
    return manifest
