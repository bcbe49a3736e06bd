"""The S3 model store end to end: `pilotlight serve` and `pilotlight model ...` against an
S3-compatible server (tests/integration/s3: s3rver with SigV4 verification, conditional PUTs,
request records and fault injection; see s3support.py). Buckets are filled with boto3 (never
with pilotlight) unless the CLI is what a test is about, and "how many requests" is counted at
the S3 server, not inferred from pilotlight's own reports.

Covered: cold start from S3 into the verified cache (one download; sha256-named file + sidecar),
a restart that downloads nothing, conditional re-reads (304) of current.json and of cached model
files, checksum mismatches refused (swap, verify, promote), interrupted and failing downloads
(resume with Range + If-Match, starting over when the object changed; 503 retries; a CLI
command sharing the server's state directory), single-flight cold starts, concurrent promotes
(compare-and-swap on current.json: no lost update; 409 through the server), rollback (CLI and
admin API), hot swap under load (every response names its version; no error; no going back),
pinned functions, multipart push, error messages, and the cache size cap (LRU eviction that
never touches a loaded model's file).

Every test uses its own key prefix in the bucket "models" and its own state directories.
"""

import hashlib
import json
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

import s3support
import support
from s3support import current_key, promote, read_current, upload_version, version_key
from support import (CHILD_ENV, assert_error, assert_ok, cli_output, digits_rows, digits_test,
                     run_cli, sha256_file, wait_until)

BUCKET = "models"


# --------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------
def _variant(src, dst, tag):
    """`src` with another doc_string: same graph and weights (same outputs), other bytes/sha256."""
    import onnx

    m = onnx.load(str(src))
    m.doc_string = (m.doc_string or "") + " (pilotlight S3 store tests: %s)" % tag
    onnx.save(m, str(dst))
    return Path(dst)


@pytest.fixture(scope="module")
def files(models_dir, tmp_path_factory):
    """digits in four byte-different versions (d1 is build/models/digits.onnx), mlp_10mb and a
    byte-different copy of it (two ~10.5 MB files with different sha256)."""
    d = tmp_path_factory.mktemp("s3_store_models")
    out = {"d1": models_dir / "digits.onnx", "mlp": models_dir / "mlp_10mb.onnx"}
    for i in (2, 3, 4):
        out["d%d" % i] = _variant(models_dir / "digits.onnx", d / ("digits_v%d.onnx" % i), "v%d" % i)
    out["mlp_b"] = _variant(models_dir / "mlp_10mb.onnx", d / "mlp_10mb_b.onnx", "b")
    shas = {sha256_file(p) for p in out.values()}
    assert len(shas) == len(out), "the variants must differ byte-wise"
    return out


@pytest.fixture(autouse=True)
def fresh_s3(s3):
    """Forget earlier tests' request records and faults (objects stay; prefixes differ)."""
    s3.reset()
    return s3


@pytest.fixture
def c(s3):
    return s3.client()


@pytest.fixture
def servers(s3, tmp_path, pilotlight_bin, models_dir):
    """start(prefix, config=None, **options): `pilotlight serve --store s3://models/PREFIX` with
    the S3 server's endpoint and credentials in its environment (support.ServerFactory.start
    options; state_dir=PATH shares a state directory between servers)."""
    factory = support.ServerFactory(tmp_path / "servers", None)

    def start(prefix, config=None, **options):
        options.setdefault("store", s3.uri(prefix))
        options.setdefault("env", s3.env(CHILD_ENV))
        return factory.start(config, **options)

    yield start
    problems = factory.stop_all()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def cli(s3, *args, state_dir, env=None, **kw):
    """`pilotlight ARGS... --state-dir STATE` with the S3 environment."""
    return run_cli(*args, "--state-dir", state_dir, env=env or s3.env(CHILD_ENV), **kw)


def metric(server, name, **labels):
    """The value of one metric (summed over matching label sets); fails when it is absent."""
    found = server.metrics().find(name, **labels)
    assert found, "%s%s is not in /metrics" % (name, labels or "")
    return sum(v for _, v in found)


def cache_entries(state_dir):
    """(sha256-named files, sidecars, files left in tmp/) of <state>/cache."""
    cache = Path(state_dir) / "cache"
    names = sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []
    blobs = [n for n in names if re.fullmatch(r"[0-9a-f]{64}", n)]
    sidecars = [n for n in names if re.fullmatch(r"[0-9a-f]{64}\.json", n)]
    tmp = sorted(p.name for p in (cache / "tmp").iterdir()) if (cache / "tmp").is_dir() else []
    return blobs, sidecars, tmp


def digits_accuracy(body, labels):
    outs = body["outputs"]
    assert len(outs) == len(labels), body
    hits = sum(1 for probs, label in zip(outs, labels)
               if max(range(10), key=lambda i: probs[i]) == label)
    return hits / len(labels)


def invoke_digits(server, function="digits", n=1, start=0):
    r = server.invoke(function, {"inputs": digits_rows(n, start)})
    return assert_ok(r, "invoke %s:" % function)


def log_messages(server, msg, **fields):
    return [r for r in server.log_records()
            if r.get("msg") == msg and all(r.get(k) == v for k, v in fields.items())]


def wait_version(server, function, version, timeout=20.0):
    """Polls /v1/health until `function` serves `version` with no swap in progress."""
    def check():
        f = server.function_health(function)
        return f if f.get("version") == version and "swapping_to" not in f else None
    return wait_until(check, timeout, 0.02, lambda: "%s to serve %s; health: %s" % (
        function, version, server.health()))


# --------------------------------------------------------------------------------------
# 1-2. Cold start from S3; the verified cache survives a restart
# --------------------------------------------------------------------------------------
def test_cold_start_downloads_once_into_the_verified_cache(s3, c, servers, files):
    prefix = "cold"
    upload_version(c, BUCKET, prefix, "digits", "1", files["d1"])
    promote(c, BUCKET, prefix, "digits", "1")
    s3.reset()
    server = servers(prefix, {"functions": {"digits": {}}})

    rows, labels = digits_test()
    n = min(200, len(rows))
    r = server.invoke("digits", {"inputs": [list(x) for x in rows[:n]]})
    body = assert_ok(r, "first invoke from S3:")
    assert body["version"] == "1" and body["model"] == "digits", body
    assert r.headers.get("X-Cold-Start") == "true"
    acc = digits_accuracy(body, labels[:n])
    assert acc >= 0.9, "accuracy %.3f on %d held-out digits: not the trained model?" % (acc, n)
    rec = server.wait_log_record(lambda x: x.get("msg") == "request" and x.get("function") == "digits",
                                 what="the request's log line")
    assert rec["version"] == "1" and rec["cold_start"] is True, rec

    key = version_key(prefix, "digits", "1")
    assert s3.count("GET", key, 200) == 1, s3.records("GET", key)
    assert s3.count("GET", key) == 1, s3.records("GET", key)

    sha = sha256_file(files["d1"])
    blobs, sidecars, tmp = cache_entries(server.state_dir)
    assert blobs == [sha] and sidecars == [sha + ".json"] and tmp == [], (blobs, sidecars, tmp)
    cached = server.state_dir / "cache" / sha
    assert sha256_file(cached) == sha
    side = json.loads((server.state_dir / "cache" / (sha + ".json")).read_text())
    etag = c.head_object(Bucket=BUCKET, Key=key)["ETag"]
    assert side["etag"].strip('"') == etag.strip('"'), (side, etag)
    assert side["source"] == "s3://%s/%s" % (BUCKET, key), side
    assert side["size"] == files["d1"].stat().st_size, side

    assert metric(server, "pilotlight_model_cache_misses_total") == 1
    assert metric(server, "pilotlight_model_cache_hits_total") == 0
    assert metric(server, "pilotlight_model_download_bytes_total") == files["d1"].stat().st_size
    assert metric(server, "pilotlight_model_cache_files") == 1
    assert metric(server, "pilotlight_model_cache_bytes") == files["d1"].stat().st_size
    assert metric(server, "pilotlight_model_cache_max_bytes") == 10 * 2**30
    assert metric(server, "pilotlight_cold_starts_total", function="digits") == 1


def test_restart_serves_from_the_cache_without_downloading(s3, c, servers, files, tmp_path):
    prefix = "restart"
    upload_version(c, BUCKET, prefix, "digits", "1", files["d1"])
    promote(c, BUCKET, prefix, "digits", "1")
    state = tmp_path / "state"
    config = {"functions": {"digits": {}}}
    first = servers(prefix, config, state_dir=state)
    reference = invoke_digits(first, n=4)
    assert first.terminate() == 0, first.diagnostics()
    key = version_key(prefix, "digits", "1")
    assert s3.count("GET", key, 200) == 1

    s3.reset()
    second = servers(prefix, config, state_dir=state)
    r = second.invoke("digits", {"inputs": digits_rows(4)})
    body = assert_ok(r, "invoke after a restart:")
    assert body["version"] == "1" and body["outputs"] == reference["outputs"], body
    assert r.headers.get("X-Cold-Start") == "true"  # a new instance, but nothing downloaded
    assert s3.count("GET", key) == 0, "model.onnx fetched again after a restart: %s" % (
        s3.records("GET", key))
    # Only the small documents were read.
    keys = {rec["key"] for rec in s3.records("GET")}
    assert keys <= {current_key(prefix, "digits"),
                    version_key(prefix, "digits", "1", "manifest.json")}, keys
    assert metric(second, "pilotlight_model_cache_hits_total") == 1
    assert metric(second, "pilotlight_model_cache_misses_total") == 0
    assert metric(second, "pilotlight_model_download_bytes_total") == 0


# --------------------------------------------------------------------------------------
# 3. Conditional re-validation
# --------------------------------------------------------------------------------------
def test_polling_and_verify_revalidate_with_304(s3, c, servers, files, tmp_path):
    prefix = "reval"
    upload_version(c, BUCKET, prefix, "digits", "1", files["d1"])
    promote(c, BUCKET, prefix, "digits", "1")
    s3.reset()
    server = servers(prefix, {"server": {"poll_interval": "100ms"}, "functions": {"digits": {}}})
    invoke_digits(server)  # warm: now it is polled
    cur = current_key(prefix, "digits")
    wait_until(lambda: s3.count("GET", cur, 304) >= 5, 15, 0.1,
               lambda: "5 conditional re-reads of current.json; records: %s" % s3.records("GET", cur))
    # One full read (the cold start); every re-read is conditional and answered 304.
    assert s3.count("GET", cur, 200) == 1, s3.records("GET", cur)
    etag = c.head_object(Bucket=BUCKET, Key=cur)["ETag"]
    for rec in s3.records("GET", cur, 304):
        assert rec["if_none_match"] and rec["if_none_match"].strip('"') == etag.strip('"'), rec
    assert invoke_digits(server)["version"] == "1"

    # model verify: the first run downloads into its cache, the second re-validates (304).
    state = tmp_path / "cli_state"
    key = version_key(prefix, "digits", "1")
    s3.reset()
    p = cli(s3, "model", "verify", "digits", "1", "--store", s3.uri(prefix), state_dir=state)
    assert p.returncode == 0, cli_output(p)
    sha = sha256_file(files["d1"])
    assert re.search(r"^ok\s+digits@1\s+model\.onnx\b.*%s" % sha, p.stdout, re.M), p.stdout
    assert s3.count("GET", key, 200) == 1, s3.records("GET", key)
    model_etag = c.head_object(Bucket=BUCKET, Key=key)["ETag"]

    s3.reset()
    p = cli(s3, "model", "verify", "digits", "--store", s3.uri(prefix), state_dir=state)
    assert p.returncode == 0, cli_output(p)
    assert re.search(r"^ok\s+digits@1\s+model\.onnx\b", p.stdout, re.M), p.stdout
    assert s3.count("GET", key, 200) == 0, "verify downloaded a cached file again: %s" % (
        s3.records("GET", key))
    recs = s3.records("GET", key, 304)
    assert len(recs) == 1, s3.records("GET", key)
    assert recs[0]["if_none_match"].strip('"') == model_etag.strip('"'), recs
    blobs, _, tmp = cache_entries(state)
    assert blobs == [sha], blobs
    assert tmp == [], "the conditional verify left files in cache/tmp: %s" % tmp


# --------------------------------------------------------------------------------------
# 4. Checksum mismatch
# --------------------------------------------------------------------------------------
def _upload_mismatched(c, prefix, name, version, manifest_file, actual_file):
    """A version whose manifest describes `manifest_file` while model.onnx holds the (valid
    ONNX) bytes of `actual_file`."""
    upload_version(c, BUCKET, prefix, name, version, manifest_file)
    c.put_object(Bucket=BUCKET, Key=version_key(prefix, name, version),
                 Body=Path(actual_file).read_bytes())


def test_checksum_mismatch_is_never_swapped_to_verified_or_promoted(s3, c, servers, files,
                                                                    tmp_path):
    prefix = "mismatch"
    upload_version(c, BUCKET, prefix, "digits", "1", files["d1"])
    promote(c, BUCKET, prefix, "digits", "1")
    server = servers(prefix, {"server": {"poll_interval": "100ms"}, "functions": {"digits": {}}})
    assert invoke_digits(server)["version"] == "1"

    _upload_mismatched(c, prefix, "digits", "2", files["d2"], files["d3"])
    s3.reset()
    promote(c, BUCKET, prefix, "digits", "2")  # the pointer only: boto3, not pilotlight

    def failed():
        body = invoke_digits(server)
        assert body["version"] == "1", "served %r after a corrupt version was promoted" % body
        return metric(server, "pilotlight_swap_failures_total", function="digits") >= 1
    wait_until(failed, 20, 0.05, lambda: "a swap failure; health %s\n%s" % (
        server.health(), server.log_text()[-3000:]))
    # Keeps serving v1, and does not retry the same bad version at every poll (30 s back-off).
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        assert invoke_digits(server)["version"] == "1"
        time.sleep(0.05)
    bad_key = version_key(prefix, "digits", "2")
    assert s3.count("GET", bad_key) == 1, s3.records("GET", bad_key)
    assert metric(server, "pilotlight_swap_failures_total", function="digits") == 1
    assert metric(server, "pilotlight_swaps_total", function="digits") == 0
    h = server.function_health("digits")
    assert h["version"] == "1" and h["state"] == "warm", h

    blobs, sidecars, tmp = cache_entries(server.state_dir)
    assert blobs == [sha256_file(files["d1"])], blobs
    assert len(sidecars) == 1 and tmp == [], (sidecars, tmp)
    rec = server.wait_log_record(
        lambda x: x.get("msg") == "version swap failed; the previous version stays in service",
        what="the swap failure's log line")
    assert rec.get("function") == "digits" and rec.get("refused") == "2" and rec.get("serving") == "1", rec
    assert "sha256" in rec.get("error", "") and "model.onnx" in rec.get("error", ""), rec

    # The CLI: verify names the file and fails.
    state = tmp_path / "cli_state"
    p = cli(s3, "model", "verify", "digits", "2", "--store", s3.uri(prefix), state_dir=state)
    assert p.returncode != 0, cli_output(p)
    assert "model.onnx" in p.stderr and "sha256" in p.stderr.lower(), cli_output(p)
    assert not re.search(r"^ok\s", p.stdout, re.M), cli_output(p)
    assert cache_entries(state)[0] == [], "a mismatching download was kept in the cache"

    # ... and promote refuses a failing version (another model: digits' pointer already moved).
    upload_version(c, BUCKET, prefix, "other", "1", files["d1"])
    promote(c, BUCKET, prefix, "other", "1")
    _upload_mismatched(c, prefix, "other", "2", files["d2"], files["d4"])
    before, before_etag = s3support.get_object(c, BUCKET, current_key(prefix, "other"))
    s3.reset()
    p = cli(s3, "model", "promote", "other", "2", "--store", s3.uri(prefix), state_dir=state)
    assert p.returncode != 0, cli_output(p)
    assert "model.onnx" in p.stderr and "refusing to promote" in p.stderr, cli_output(p)
    after, after_etag = s3support.get_object(c, BUCKET, current_key(prefix, "other"))
    assert after == before and after_etag == before_etag, "current.json changed: %s" % after
    assert s3.count("PUT", current_key(prefix, "other")) == 0


# --------------------------------------------------------------------------------------
# 5. Interrupted and failing downloads
# --------------------------------------------------------------------------------------
def test_interrupted_download_resumes_and_503s_are_retried(s3, c, servers, files):
    prefix = "faults"
    upload_version(c, BUCKET, prefix, "digits", "1", files["d1"])
    promote(c, BUCKET, prefix, "digits", "1")
    upload_version(c, BUCKET, prefix, "flaky", "1", files["d2"])
    promote(c, BUCKET, prefix, "flaky", "1")
    key = version_key(prefix, "digits", "1")
    flaky_key = version_key(prefix, "flaky", "1")
    etag = c.head_object(Bucket=BUCKET, Key=key)["ETag"]
    size = files["d1"].stat().st_size
    s3.reset()
    s3.fault(key, "truncate", bytes=size // 2)
    s3.fault(flaky_key, "503", times=2)
    server = servers(prefix, {"functions": {"digits": {}, "flaky": {"queue_timeout": "30s"}}})

    body = invoke_digits(server, n=3)
    assert body["version"] == "1", body
    recs = s3.records("GET", key)
    assert len(recs) == 2, recs
    cut, resumed = recs
    assert cut["fault"] == "truncate" and cut["status"] == 200 and cut["sent"] == size // 2, cut
    assert resumed["status"] == 206, "the retry was not a ranged resume: %s" % recs
    assert resumed["range"] == "bytes=%d-" % (size // 2), resumed
    assert resumed["if_match"] and resumed["if_match"].strip('"') == etag.strip('"'), resumed

    body = assert_ok(server.invoke("flaky", {"inputs": digits_rows(3)}), "after two 503s:")
    assert body["version"] == "1"
    assert [r["status"] for r in s3.records("GET", flaky_key)] == [503, 503, 200], \
        s3.records("GET", flaky_key)

    blobs, sidecars, tmp = cache_entries(server.state_dir)
    expected = sorted([sha256_file(files["d1"]), sha256_file(files["d2"])])
    assert blobs == expected, blobs
    assert sidecars == [b + ".json" for b in expected] and tmp == [], (sidecars, tmp)
    for b in blobs:
        assert sha256_file(server.state_dir / "cache" / b) == b
    assert metric(server, "pilotlight_model_download_bytes_total") == size + files["d2"].stat().st_size
    server.wait_log_record(lambda x: x.get("msg") == "download interrupted; resuming",
                           what="the resume's log line")


def test_resume_after_the_object_changed_starts_over(s3, c, servers, files):
    """A resumed download is pinned to the ETag it started with: when the object is replaced
    between the interruption and the resume, the resume gets 412 and the download starts over
    (never a file spliced from two objects); the new bytes do not match the manifest: refused."""
    prefix = "changed"
    upload_version(c, BUCKET, prefix, "digits", "1", files["d3"])
    promote(c, BUCKET, prefix, "digits", "1")
    key = version_key(prefix, "digits", "1")
    old_etag = c.head_object(Bucket=BUCKET, Key=key)["ETag"]
    size = files["d3"].stat().st_size
    server = servers(prefix, {"functions": {"digits": {"queue_timeout": "30s"}}})
    s3.reset()
    s3.fault(key, "truncate", bytes=size // 2)
    s3.fault(key, "delay", ms=1500)  # the resume waits at the server while the object changes
    answer = {}

    def call():
        with support.new_session() as s:
            answer["r"] = s.post(server.url + "/v1/functions/digits/invoke",
                                 json={"inputs": digits_rows(1)}, timeout=60)

    t = threading.Thread(target=call)
    t.start()
    wait_until(lambda: s3.records("GET", key, fault="truncate"), 20, 0.01, "the interrupted GET")
    c.put_object(Bucket=BUCKET, Key=key, Body=files["d4"].read_bytes())
    t.join(60)
    err = assert_error(answer["r"], 503, "model_integrity")
    new_sha = sha256_file(files["d4"])
    assert new_sha in err["message"], "the refused bytes are not the new object's: %s" % err
    recs = s3.records("GET", key)
    assert [r["status"] for r in recs] == [200, 412, 200], recs
    assert recs[1]["range"] == "bytes=%d-" % (size // 2), recs[1]
    assert recs[1]["if_match"].strip('"') == old_etag.strip('"'), recs[1]
    assert not recs[2].get("range") and not recs[2].get("if_match"), recs[2]
    blobs, sidecars, tmp = cache_entries(server.state_dir)
    assert blobs == [] and sidecars == [] and tmp == [], (blobs, sidecars, tmp)


def test_cli_sharing_the_state_dir_does_not_break_a_running_download(s3, c, servers, files,
                                                                     tmp_path):
    """`pilotlight serve` and `pilotlight model ...` started in the same folder share
    ./.pilotlight (the default state_dir): a model command run while the server downloads a
    model must not destroy that download (cache/tmp is emptied at start-up for leftovers of
    dead processes, not for another live process's files)."""
    prefix = "shared"
    upload_version(c, BUCKET, prefix, "digits", "1", files["d1"])
    promote(c, BUCKET, prefix, "digits", "1")
    state = tmp_path / "state"
    server = servers(prefix, {"functions": {"digits": {"queue_timeout": "30s"}}}, state_dir=state)
    key = version_key(prefix, "digits", "1")
    s3.reset()
    s3.fault(key, "delay", ms=2000)
    answer = {}

    def call():
        with support.new_session() as s:
            answer["r"] = s.post(server.url + "/v1/functions/digits/invoke",
                                 json={"inputs": digits_rows(1)}, timeout=60)

    t = threading.Thread(target=call)
    t.start()
    wait_until(lambda: cache_entries(state)[2], 20, 0.01, "the download to start in cache/tmp")
    p = cli(s3, "model", "list", "--store", s3.uri(prefix), state_dir=state)
    assert p.returncode == 0, cli_output(p)
    t.join(60)
    body = assert_ok(answer["r"], "a cold start whose download overlapped a CLI command:")
    assert body["version"] == "1"
    blobs, _, _ = cache_entries(state)
    assert blobs == [sha256_file(files["d1"])], blobs


# --------------------------------------------------------------------------------------
# 6. Concurrent cold starts of the same content: one download
# --------------------------------------------------------------------------------------
def test_concurrent_cold_starts_download_once(s3, c, servers, files):
    prefix = "single"
    upload_version(c, BUCKET, prefix, "digits", "1", files["d1"])
    promote(c, BUCKET, prefix, "digits", "1")
    fn = {"model": "digits", "queue_timeout": "60s"}
    server = servers(prefix, {"functions": {"a": fn, "b": fn, "c": fn}})
    key = version_key(prefix, "digits", "1")
    s3.reset()
    s3.fault(key, "delay", ms=1500)

    per_function = 10
    barrier = threading.Barrier(3 * per_function)
    results = []
    lock = threading.Lock()

    def call(function, i):
        with support.new_session() as s:
            barrier.wait()
            r = s.post(server.url + "/v1/functions/%s/invoke" % function,
                       json={"inputs": digits_rows(1, i)}, timeout=120)
        with lock:
            results.append((function, r.status_code, r.text[:300]))

    threads = [threading.Thread(target=call, args=(f, i)) for f in "abc" for i in range(per_function)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert len(results) == 3 * per_function, results
    bad = [x for x in results if x[1] != 200]
    assert not bad, bad
    assert s3.count("GET", key) == 1, s3.records("GET", key)
    assert s3.records("GET", key)[0]["fault"] == "delay"
    assert metric(server, "pilotlight_model_cache_misses_total") == 1
    for f in "abc":
        assert metric(server, "pilotlight_cold_starts_total", function=f) >= 1
        assert metric(server, "pilotlight_load_failures_total", function=f) == 0


# --------------------------------------------------------------------------------------
# 7. Concurrent promotes: compare-and-swap on current.json
# --------------------------------------------------------------------------------------
def _versions(doc):
    return [h["version"] for h in doc["history"]]


def test_concurrent_promotes_never_lose_an_update(s3, c, servers, files, tmp_path):
    prefix = "race"
    for v in ("1", "2", "3", "4"):
        upload_version(c, BUCKET, prefix, "digits", v, files["d%s" % v])
    promote(c, BUCKET, prefix, "digits", "1")
    cur = current_key(prefix, "digits")
    uri = s3.uri(prefix)

    rounds = [("2", "3"), ("4", "1"), ("3", "2")]
    raced = 0
    for rnd, (va, vb) in enumerate(rounds):
        base = read_current(c, BUCKET, prefix, "digits")
        assert base["version"] not in (va, vb)
        s3.reset()
        # Both PUTs of current.json wait 1.5 s at the server before it checks If-Match, so
        # both commands read the same current.json (a real race) unless one is far behind.
        s3.fault(cur, "delay", method="PUT", ms=1500, times=2)
        procs = {}
        for v in (va, vb):
            argv = [str(support.BIN), "model", "promote", "digits", v, "--store", uri,
                    "--state-dir", str(tmp_path / ("state_%d_%s" % (rnd, v)))]
            procs[v] = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=s3.env(CHILD_ENV))
        out = {}
        for v, p in procs.items():
            stdout, stderr = p.communicate(timeout=120)
            out[v] = (p.returncode, stdout, stderr)
        ok = [v for v in (va, vb) if out[v][0] == 0]
        failed = [v for v in (va, vb) if out[v][0] != 0]
        for v in failed:
            assert out[v][0] == 1 and "changed while this command ran" in out[v][2], out[v]
        assert ok, "both promotes failed: %s" % out
        final = read_current(c, BUCKET, prefix, "digits")
        if len(ok) == 1:
            (winner,) = ok
            assert final["version"] == winner, (final, out)
            assert _versions(final) == _versions(base) + [base["version"]], (base, final)
            loser = failed[0]
            assert "'%s'" % winner in out[loser][2], out[loser]
        else:
            # Both succeeded: they must have run one after the other, the second on top of
            # the first (otherwise the first one's promotion was silently overwritten).
            second = final["version"]
            first = va if second == vb else vb
            assert second in (va, vb), final
            assert _versions(final) == _versions(base) + [base["version"], first], (
                "lost update: both promotes succeeded but history %s lacks %s (base %s)"
                % (final["history"], first, base))
        puts = s3.records("PUT", cur)
        assert len(puts) == 2, puts
        assert sum(1 for p in puts if p["status"] == 200) == len(ok), puts
        assert sum(1 for p in puts if p["status"] == 412) == len(failed), puts
        by_etag = {}
        for p in puts:
            assert p["if_match"], "a promote wrote current.json unconditionally: %s" % p
            by_etag.setdefault(p["if_match"], []).append(p["status"])
        for etag, statuses in by_etag.items():
            assert statuses.count(200) <= 1, "two writes won against the same ETag %s: %s" % (
                etag, puts)
        if len(by_etag) == 1:
            raced += 1
    assert raced >= 1, "no round had both promotes read the same current.json; no race tested"

    # Through the server: the admin promote loses to a write made while its PUT is in flight.
    server = servers(prefix, {"server": {"poll_interval": "0s"}, "functions": {"digits": {}}})
    invoke_digits(server)
    base = read_current(c, BUCKET, prefix, "digits")
    target, other = [v for v in ("1", "2", "3", "4") if v != base["version"]][:2]
    s3.reset()
    s3.fault(cur, "delay", method="PUT", ms=2000, times=1)
    answer = {}

    def admin():
        with support.new_session() as s:
            answer["r"] = s.post(server.url + "/admin/models/digits/promote",
                                 json={"version": target}, timeout=60)

    t = threading.Thread(target=admin)
    t.start()
    # The server's fresh (unconditional) read of current.json is its compare-and-swap token.
    wait_until(lambda: [r for r in s3.records("GET", cur) if not r.get("if_none_match")], 20, 0.01,
               "the admin promote to read current.json")
    time.sleep(0.4)  # its PUT is now waiting in the injected delay
    promote(c, BUCKET, prefix, "digits", other)
    t.join(60)
    err = assert_error(answer["r"], 409, "conflict")
    assert "changed while this command ran" in err["message"], err
    final = read_current(c, BUCKET, prefix, "digits")
    assert final["version"] == other, final
    assert invoke_digits(server)["version"] == base["version"], "swapped after a lost CAS"


# --------------------------------------------------------------------------------------
# 8. Rollback
# --------------------------------------------------------------------------------------
def test_rollback_through_the_store_and_the_server(s3, c, servers, files, tmp_path):
    prefix = "rollback"
    for v in ("1", "2", "3"):
        upload_version(c, BUCKET, prefix, "digits", v, files["d%s" % v])
    uri = s3.uri(prefix)
    state = tmp_path / "cli_state"

    def run(*args):
        return cli(s3, "model", *args, "--store", uri, state_dir=state)

    for v in ("1", "2", "3"):
        p = run("promote", "digits", v)
        assert p.returncode == 0, cli_output(p)
    cur = read_current(c, BUCKET, prefix, "digits")
    assert cur["version"] == "3" and _versions(cur) == ["1", "2"], cur
    manifest, _ = s3support.get_object(c, BUCKET, version_key(prefix, "digits", "3", "manifest.json"))
    assert cur["sha256"] == hashlib.sha256(manifest).hexdigest(), cur

    p = run("rollback", "digits")
    assert p.returncode == 0, cli_output(p)
    assert "back to 2" in p.stdout and "was 3" in p.stdout, p.stdout
    cur = read_current(c, BUCKET, prefix, "digits")
    assert cur["version"] == "2" and _versions(cur) == ["1"], cur
    p = run("rollback", "digits")
    assert p.returncode == 0, cli_output(p)
    cur = read_current(c, BUCKET, prefix, "digits")
    assert cur["version"] == "1" and _versions(cur) == [], cur
    raw, etag = s3support.get_object(c, BUCKET, current_key(prefix, "digits"))
    p = run("rollback", "digits")
    assert p.returncode != 0, cli_output(p)
    assert "no earlier promotion" in p.stderr, cli_output(p)
    assert s3support.get_object(c, BUCKET, current_key(prefix, "digits")) == (raw, etag)

    # Through a running server (poll_interval 0s: only the admin calls switch it).
    server = servers(prefix, {"server": {"poll_interval": "0s"}, "functions": {"digits": {}}})
    assert invoke_digits(server)["version"] == "1"
    steps = [("promote", "2", "1"), ("promote", "3", "2"), ("rollback", "2", "3"),
             ("rollback", "1", "2")]
    for i, (action, expect, previous) in enumerate(steps):
        if i % 2 == 0:  # the CLI's --server
            args = [action, "digits"] + ([expect] if action == "promote" else [])
            p = cli(s3, "model", *args, "--server", server.url, state_dir=state)
            assert p.returncode == 0, cli_output(p)
            assert re.search(r"function\s+digits\s+swapped", p.stdout), p.stdout
        else:  # the admin API itself
            r = server.post("/admin/models/digits/%s" % action,
                            json={"version": expect} if action == "promote" else {})
            body = assert_ok(r, "admin %s:" % action)
            assert body == {"model": "digits", "version": expect, "previous": previous,
                            "swapped": True, "functions": {"digits": "swapped"}}, body
        # The answer came after the swap: the very next request is served by the new version.
        assert invoke_digits(server)["version"] == expect, (action, expect)
        assert read_current(c, BUCKET, prefix, "digits")["version"] == expect
    r = server.post("/admin/models/digits/rollback", json={})
    assert_error(r, 503, "not_ready")
    assert invoke_digits(server)["version"] == "1"
    assert metric(server, "pilotlight_swaps_total", function="digits") == len(steps)
    _, _, tmp = cache_entries(server.state_dir)
    assert tmp == [], "admin promotes (verify of cached files) left files in cache/tmp: %s" % tmp


# --------------------------------------------------------------------------------------
# 9. Hot swap under load
# --------------------------------------------------------------------------------------
class LoadGenerator:
    """`threads` clients, each with its own keep-alive session, sending one invoke after the
    other until stopped; every response is recorded with its send and receive times."""

    def __init__(self, server, function, threads=3):
        self.server = server
        self.function = function
        self.stop = threading.Event()
        self.results = [[] for _ in range(threads)]
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]
        self.body = support.json_bytes({"inputs": digits_rows(1)})

    def _run(self, i):
        s = support.new_session()
        url = self.server.url + "/v1/functions/%s/invoke" % self.function
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                r = s.post(url, data=self.body, headers={"Content-Type": "application/json"},
                           timeout=60)
                status, text = r.status_code, r.text
            except requests.RequestException as e:
                status, text = -1, repr(e)
            t1 = time.monotonic()
            version = None
            if status == 200:
                try:
                    version = json.loads(text).get("version")
                except ValueError:
                    status = -2
            self.results[i].append((t0, t1, status, version, text[:300]))
        s.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)


def test_hot_swap_under_load_serves_every_request_in_order(s3, c, servers, files, tmp_path):
    prefix = "hot"
    for v in ("1", "2", "3"):
        upload_version(c, BUCKET, prefix, "digits", v, files["d%s" % v])
    promote(c, BUCKET, prefix, "digits", "1")
    uri = s3.uri(prefix)
    state = tmp_path / "cli_state"
    server = servers(prefix, {"server": {"poll_interval": "100ms"},
                              "functions": {"digits": {"concurrency": 4}}})
    assert invoke_digits(server)["version"] == "1"

    def admin(action, version=None):
        r = server.post("/admin/models/digits/%s" % action,
                        json={"version": version} if action == "promote" else {})
        body = assert_ok(r, "admin %s %s:" % (action, version))
        assert body["swapped"] is True and body["functions"] == {"digits": "swapped"}, body

    def cli_server(action, version=None):
        args = ["model", action, "digits"] + ([version] if version else [])
        p = cli(s3, *args, "--server", server.url, state_dir=state)
        assert p.returncode == 0, cli_output(p)

    def cli_store(action, version=None):
        args = ["model", action, "digits"] + ([version] if version else [])
        p = cli(s3, *args, "--store", uri, state_dir=state)
        assert p.returncode == 0, cli_output(p)

    def boto3_promote(version):
        promote(c, BUCKET, prefix, "digits", version)

    # (what makes the change, the version it leads to, picked up by polling?)
    changes = [
        (lambda: admin("promote", "2"), "2", False),          # 1 -> 2  history [1]
        (lambda: admin("rollback"), "1", False),              # 2 -> 1  []
        (lambda: cli_server("promote", "3"), "3", False),     # 1 -> 3  [1]
        (lambda: cli_store("promote", "2"), "2", True),       # 3 -> 2  [1, 3]
        (lambda: admin("rollback"), "3", False),              # 2 -> 3  [1]
        (lambda: cli_server("promote", "2"), "2", False),     # 3 -> 2  [1, 3]
        (lambda: boto3_promote("1"), "1", True),              # 2 -> 1  [1, 3, 2]
        (lambda: cli_server("rollback"), "2", False),         # 1 -> 2  [1, 3]
        (lambda: admin("rollback"), "3", False),              # 2 -> 3  [1]
        (lambda: cli_store("rollback"), "1", True),           # 3 -> 1  []
    ]
    versions = ["1"] + [v for _, v, _ in changes]   # versions[k]: current after change k
    started, confirmed = [0.0], [0.0]               # per change k (index 0: the initial state)
    with LoadGenerator(server, "digits") as load:
        time.sleep(0.3)
        for make_change, version, polled in changes:
            started.append(time.monotonic())
            make_change()  # through the server: returns after the swap
            if polled:
                wait_version(server, "digits", version)
            confirmed.append(time.monotonic())
            time.sleep(0.3)
        time.sleep(0.3)
    assert read_current(c, BUCKET, prefix, "digits")["version"] == "1"
    assert _versions(read_current(c, BUCKET, prefix, "digits")) == []

    total = sum(len(r) for r in load.results)
    errors = [x for r in load.results for x in r if x[2] != 200]
    assert not errors, "%d of %d requests failed during swaps: %s" % (len(errors), total, errors[:5])
    assert all(len(r) >= 10 for r in load.results), [len(r) for r in load.results]
    seen = {x[3] for r in load.results for x in r}
    assert seen <= {"1", "2", "3"}, seen

    # Order. Change k (1..10) makes versions[k] current; it started at started[k] and was
    # confirmed (admin answer received, or the health endpoint showing it) at confirmed[k].
    # A response may come from the version of change k only if it was received after change k
    # started and sent before change k+1 was confirmed. Each thread sends one request after the
    # other, so the change indices of its responses must be non-decreasing: the greedy
    # assignment of the smallest admissible index >= the previous one must always succeed.
    # That is: no request ever sees a version from before a change that was already confirmed
    # when the request was sent, and no thread goes back to an older version once it saw a
    # newer one.
    n = len(changes)
    for ti, results in enumerate(load.results):
        k = 0
        for t0, t1, status, version, _ in results:
            options = [j for j in range(k, n + 1) if versions[j] == version
                       and (j == 0 or t1 > started[j]) and (j == n or t0 < confirmed[j + 1])]
            assert options, (
                "thread %d: a response from version %s (sent %.3f, received %.3f) does not fit "
                "after change %d (%s); changes (started, confirmed, version): %s"
                % (ti, version, t0, t1, k, versions[k],
                   list(zip(started, confirmed, versions))))
            k = options[0]
    # Every confirmed change was observed by the load: after change k, a request that was sent
    # after its confirmation and answered before the next change started shows versions[k].
    for k in range(1, n + 1):
        nxt = started[k + 1] if k < n else float("inf")
        window = [x for r in load.results for x in r if x[0] > confirmed[k] and x[1] < nxt]
        assert window, "no request was sent and answered between change %d and the next" % k
        assert all(x[3] == versions[k] for x in window), (k, versions[k], [x[3] for x in window])

    assert metric(server, "pilotlight_swaps_total", function="digits") == n
    assert metric(server, "pilotlight_swap_failures_total", function="digits") == 0
    assert metric(server, "pilotlight_cold_starts_total", function="digits") == 1, \
        "a swap made requests wait for a cold start"
    wait_until(lambda: len(log_messages(server, "version swapped", function="digits")) == n, 5, 0.2,
               lambda: "%d 'version swapped' lines" % n)
    swapped = log_messages(server, "version swapped", function="digits")
    assert [(x["from"], x["to"]) for x in swapped] == list(zip(versions, versions[1:])), swapped
    # The old instances are gone: one instance, nothing retiring.
    h = wait_until(lambda: (lambda f: f if f.get("instances") == 1 and "retiring" not in f
                            else None)(server.function_health("digits")), 10, 0.1,
                   lambda: "the old instances to unload; health %s" % server.health())
    assert h["version"] == "1" and h["state"] == "warm", h
    assert metric(server, "pilotlight_instances", function="digits", state="warm") == 1


# --------------------------------------------------------------------------------------
# 10. Pinned functions
# --------------------------------------------------------------------------------------
def test_pinned_function_keeps_its_version(s3, c, servers, files):
    prefix = "pinned"
    for v in ("1", "2", "3"):
        upload_version(c, BUCKET, prefix, "digits", v, files["d%s" % v])
    promote(c, BUCKET, prefix, "digits", "1")
    server = servers(prefix, {"server": {"poll_interval": "100ms"},
                              "functions": {"digits": {}, "digits_v1": {"model": "digits",
                                                                       "version": "1"}}})
    assert invoke_digits(server)["version"] == "1"
    assert invoke_digits(server, "digits_v1")["version"] == "1"
    r = server.post("/admin/models/digits/promote", json={"version": "2"})
    body = assert_ok(r, "admin promote:")
    assert body["functions"] == {"digits": "swapped", "digits_v1": "pinned"}, body
    assert body["swapped"] is True and body["version"] == "2" and body["previous"] == "1", body
    assert invoke_digits(server)["version"] == "2"
    assert invoke_digits(server, "digits_v1")["version"] == "1"

    promote(c, BUCKET, prefix, "digits", "3")  # in the store only: polled
    wait_version(server, "digits", "3")
    assert invoke_digits(server)["version"] == "3"
    for _ in range(5):
        assert invoke_digits(server, "digits_v1")["version"] == "1"
    assert metric(server, "pilotlight_swaps_total", function="digits_v1") == 0
    assert server.function_health("digits_v1")["version"] == "1"


# --------------------------------------------------------------------------------------
# 11. Multipart upload
# --------------------------------------------------------------------------------------
def test_multipart_push_then_serve(s3, c, servers, files, tmp_path):
    prefix = "multipart"
    part = 5 * 2**20
    cfg = tmp_path / "pilotlight.yaml"
    config = {"store": s3.uri(prefix), "s3": {"multipart_threshold": part, "part_size": part},
              "functions": {"big": {}}}
    cfg.write_text(support.to_yaml(config) + "\n")
    src = files["mlp"]
    size = src.stat().st_size
    parts = -(-size // part)
    assert parts == 3, size

    p = cli(s3, "model", "push", src, "-n", "big", "-v", "1", "--promote", "--config", cfg,
            state_dir=tmp_path / "cli_state")
    assert p.returncode == 0, cli_output(p)
    key = version_key(prefix, "big", "1")
    init = s3.records("POST", key)
    assert [r["query"] for r in init][:1] in (["uploads="], ["uploads"]), init
    assert init[0]["status"] == 200
    puts = [r for r in s3.records("PUT", key) if "partNumber=" in (r["query"] or "")]
    numbers = sorted(int(re.search(r"partNumber=(\d+)", r["query"]).group(1)) for r in puts)
    assert numbers == list(range(1, parts + 1)), puts
    assert all(r["status"] == 200 for r in puts), puts
    assert [r["req_length"] for r in sorted(puts, key=lambda r: r["query"])][:2] == [part, part]
    complete = [r for r in init if "uploadId=" in (r["query"] or "")]
    assert len(complete) == 1 and complete[0]["status"] == 200, init
    assert s3.count("PUT", key) == parts, "a plain PUT besides the parts: %s" % s3.records("PUT", key)
    assert s3.count("DELETE", key) == 0

    data = c.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert len(data) == size and hashlib.sha256(data).hexdigest() == sha256_file(src)
    manifest = json.loads(c.get_object(Bucket=BUCKET, Key=version_key(
        prefix, "big", "1", "manifest.json"))["Body"].read())
    assert manifest["files"][0]["sha256"] == sha256_file(src), manifest
    assert read_current(c, BUCKET, prefix, "big")["version"] == "1"

    server = servers(prefix, cfg.read_text(), store=None)
    r = server.invoke("big", {"inputs": [[0.5] * 512, [-0.25] * 512]})
    body = assert_ok(r, "invoke the multipart-uploaded model:")
    assert body["version"] == "1" and support.shape_of(body["outputs"]) == [2, 10], body


# --------------------------------------------------------------------------------------
# 12. Errors
# --------------------------------------------------------------------------------------
def test_errors_name_the_problem(s3, c, servers, files, tmp_path):
    prefix = "errors"
    upload_version(c, BUCKET, prefix, "digits", "1", files["d1"])
    promote(c, BUCKET, prefix, "digits", "1")
    state = tmp_path / "cli_state"

    p = cli(s3, "model", "list", "--store", "s3://no-such-bucket-here/x", state_dir=state)
    assert p.returncode != 0, cli_output(p)
    assert "no-such-bucket-here" in p.stderr and "does not exist" in p.stderr, cli_output(p)

    wrong = s3.env(CHILD_ENV)
    wrong["AWS_SECRET_ACCESS_KEY"] = s3.secret_key[:-1] + ("A" if s3.secret_key[-1] != "A" else "B")
    p = cli(s3, "model", "list", "--store", s3.uri(prefix), state_dir=state, env=wrong)
    assert p.returncode != 0, cli_output(p)
    assert re.search(r"access to \S+ denied", p.stderr), cli_output(p)
    assert "credentials" in p.stderr and "AWS_SECRET_ACCESS_KEY" in p.stderr, cli_output(p)
    assert s3.secret_key not in p.stderr + p.stdout, "the secret key was printed"
    assert s3.count("GET", "", 403) >= 1

    p = cli(s3, "model", "list", "--store", s3.uri(prefix), state_dir=state)
    assert p.returncode == 0 and re.search(r"^digits\s+1\s+1$", p.stdout, re.M), cli_output(p)

    server = servers(prefix, {"functions": {"digits": {}}})
    assert_error(server.post("/admin/models/nosuchmodel/promote", json={"version": "1"}),
                 404, "not_found")
    assert_error(server.post("/admin/models/nosuchmodel/rollback", json={}), 404, "not_found")
    err = assert_error(server.post("/admin/models/digits/promote", json={"version": "9"}),
                       404, "not_found")
    assert "'9'" in err["message"], err
    assert_error(server.post("/admin/models/digits/promote", json={}), 400, "invalid_input")
    assert_error(server.post("/admin/models/digits/rollback", json={}), 503, "not_ready")
    assert invoke_digits(server)["version"] == "1"
    assert read_current(c, BUCKET, prefix, "digits")["version"] == "1"


# --------------------------------------------------------------------------------------
# 13. Cache size cap
# --------------------------------------------------------------------------------------
def test_cache_cap_evicts_unused_files_never_a_loaded_one(s3, c, servers, files):
    prefix = "cap"
    upload_version(c, BUCKET, prefix, "big_a", "1", files["mlp"])
    promote(c, BUCKET, prefix, "big_a", "1")
    upload_version(c, BUCKET, prefix, "big_b", "1", files["mlp_b"])
    promote(c, BUCKET, prefix, "big_b", "1")
    sha_a, sha_b = sha256_file(files["mlp"]), sha256_file(files["mlp_b"])
    size_a, size_b = files["mlp"].stat().st_size, files["mlp_b"].stat().st_size
    cap = 12_000_000
    assert max(size_a, size_b) < cap < size_a + size_b
    server = servers(prefix, {"cache": {"max_bytes": cap}, "functions": {
        "big_a": {"idle_timeout": "0s", "queue_timeout": "30s"},   # unloads when idle
        "big_b": {"idle_timeout": "300s", "queue_timeout": "30s"}}})
    cache = server.state_dir / "cache"
    body = {"inputs": [[0.1] * 512]}
    key_a = version_key(prefix, "big_a", "1")

    assert_ok(server.invoke("big_a", body))
    server.wait_cold("big_a")
    assert (cache / sha_a).is_file(), "evicted below the cap"
    assert metric(server, "pilotlight_model_cache_evictions_total") == 0

    assert_ok(server.invoke("big_b", body))  # over the cap: big_a's file is not in use
    wait_until(lambda: not (cache / sha_a).exists(), 10, 0.05, "big_a's file to be evicted")
    assert not (cache / (sha_a + ".json")).exists()
    assert (cache / sha_b).is_file() and server.function_health("big_b")["state"] == "warm"
    assert metric(server, "pilotlight_model_cache_evictions_total") == 1
    assert metric(server, "pilotlight_model_cache_bytes") == size_b
    assert metric(server, "pilotlight_model_cache_max_bytes") == cap

    # big_a again: downloaded again (the cache is over the cap while both are loaded); once
    # big_a unloads its file goes, never the warm big_b's.
    assert_ok(server.invoke("big_a", body))
    assert s3.count("GET", key_a, 200) == 2, s3.records("GET", key_a)
    server.wait_cold("big_a")
    wait_until(lambda: not (cache / sha_a).exists(), 10, 0.05, "big_a's file to be evicted again")
    assert (cache / sha_b).is_file(), "the warm function's file was evicted"
    assert server.function_health("big_b")["state"] == "warm"
    assert metric(server, "pilotlight_model_cache_evictions_total") == 2
    assert metric(server, "pilotlight_model_cache_files") == 1
    assert_ok(server.invoke("big_b", body))
    assert s3.count("GET", version_key(prefix, "big_b", "1")) == 1
