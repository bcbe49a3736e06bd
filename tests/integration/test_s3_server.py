"""The S3 test server itself (tests/integration/s3/s3server.js via s3support): what the S3
store's tests rely on actually happens. A server that accepted any signature, ignored If-Match
or could not interrupt a download would make those tests pass for the wrong reason.

Needs Node.js and `npm ci` in tests/integration/s3 (tools/setup.sh), not the pilotlight binary.
"""

import hashlib
import json
import threading
import time

import pytest
import requests
from botocore.exceptions import ClientError, ResponseStreamingError

import s3support
from s3support import error_code, put_object

BUCKET = "models"


def blob(n, seed=0):
    return bytes((i * 7 + seed) % 251 for i in range(n))


def md5_etag(data):
    return '"%s"' % hashlib.md5(data).hexdigest()


@pytest.fixture
def c(s3):
    s3.reset()
    return s3.client()


# ------------------------------------------------------------------ authentication
def test_wrong_secret_is_refused_and_right_one_accepted(s3, c):
    c.put_object(Bucket=BUCKET, Key="auth/a.bin", Body=b"abc")
    bad = s3.client(secret_key=s3.secret_key[:-1] + ("A" if s3.secret_key[-1] != "A" else "B"))
    with pytest.raises(ClientError) as e:
        bad.get_object(Bucket=BUCKET, Key="auth/a.bin")
    assert error_code(e.value) == ("SignatureDoesNotMatch", 403)
    with pytest.raises(ClientError) as e:
        bad.put_object(Bucket=BUCKET, Key="auth/b.bin", Body=b"nope")
    assert error_code(e.value) == ("SignatureDoesNotMatch", 403)
    assert c.get_object(Bucket=BUCKET, Key="auth/a.bin")["Body"].read() == b"abc"
    assert s3.count("GET", "auth/a.bin", 403, error="SignatureDoesNotMatch") == 1
    assert s3.count("GET", "auth/a.bin", 200) == 1
    assert s3.count("PUT", "auth/b.bin", 403) == 1
    assert not s3.object_path("auth/b.bin").exists(), "a refused PUT stored the object"
    # The refusal carries the server's canonical request, for debugging a client's signer.
    rec = s3.records("GET", "auth/a.bin", 403)[0]
    assert rec["canonical_request"].startswith("GET\n/models/auth/a.bin\n")
    assert "SignatureDoesNotMatch GET /models/auth/a.bin" in s3.log_text()


def test_anonymous_unknown_key_and_tampered_requests_are_refused(s3, c):
    c.put_object(Bucket=BUCKET, Key="auth/c.bin", Body=b"xyz")
    r = requests.get(s3.url("auth/c.bin"))
    assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text
    with pytest.raises(ClientError) as e:
        s3.client(access_key="AKIDNOTKNOWN00000000").get_object(Bucket=BUCKET, Key="auth/c.bin")
    assert error_code(e.value) == ("InvalidAccessKeyId", 403)
    # Signed for one key, sent for another: the path is part of the signature.
    signed = s3.request("GET", "auth/c.bin")
    assert signed.status_code == 200 and signed.content == b"xyz"
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(method="GET", url=s3.url("auth/c.bin"),
                     headers={"x-amz-content-sha256": hashlib.sha256(b"").hexdigest()})
    S3SigV4Auth(Credentials(s3.access_key, s3.secret_key), "s3", s3.region).add_auth(req)
    r = requests.get(s3.url("auth/other.bin"), headers=dict(req.headers.items()))
    assert r.status_code == 403 and "SignatureDoesNotMatch" in r.text
    # Presigned URLs are verified too.
    url = c.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "auth/c.bin"},
                                   ExpiresIn=60)
    assert requests.get(url).content == b"xyz"
    assert requests.get(url.replace("auth/c.bin", "auth/C.bin")).status_code == 403


def test_body_must_match_its_signed_sha256(s3, c):
    body = b'{"version": "1"}'
    r = s3.request("PUT", "auth/sha.json", body=body)
    assert r.status_code == 200, r.text
    # Signed with the hash of other bytes than it sends: refused, nothing stored.
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    other = b'{"version": "2"}'
    req = AWSRequest(method="PUT", url=s3.url("auth/sha.json"), data=body)
    S3SigV4Auth(Credentials(s3.access_key, s3.secret_key), "s3", s3.region).add_auth(req)
    r = requests.put(s3.url("auth/sha.json"), data=other, headers=dict(req.headers.items()))
    assert r.status_code == 400 and "XAmzContentSHA256Mismatch" in r.text
    assert c.get_object(Bucket=BUCKET, Key="auth/sha.json")["Body"].read() == body


# ------------------------------------------------------------------ conditional requests
def test_conditional_put(s3, c):
    key = "cond/current.json"
    r1 = put_object(c, BUCKET, key, b"one", if_none_match="*")
    assert r1["ETag"] == md5_etag(b"one")
    with pytest.raises(ClientError) as e:
        put_object(c, BUCKET, key, b"two", if_none_match="*")
    assert error_code(e.value) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError) as e:
        put_object(c, BUCKET, key, b"two", if_match=md5_etag(b"stale"))
    assert error_code(e.value) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError) as e:  # If-Match on a key that does not exist
        put_object(c, BUCKET, "cond/absent.json", b"x", if_match=r1["ETag"])
    assert error_code(e.value) == ("PreconditionFailed", 412)
    r2 = put_object(c, BUCKET, key, b"two", if_match=r1["ETag"])
    assert r2["ETag"] == md5_etag(b"two")
    assert c.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"two"
    assert s3.count("PUT", key, 412) == 2 and s3.count("PUT", key, 200) == 2
    assert s3.records("PUT", key, 412)[0]["if_none_match"] == "*"


def test_concurrent_conditional_puts_have_one_winner(s3, c):
    key = "cond/race.json"
    etag = c.put_object(Bucket=BUCKET, Key=key, Body=b"base")["ETag"]
    results = []

    def attempt(i):
        cl = s3.client()
        try:
            put_object(cl, BUCKET, key, b"writer %d" % i, if_match=etag)
            results.append(("ok", i))
        except ClientError as e:
            results.append(error_code(e))

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for status, i in results if status == "ok"]
    assert len(winners) == 1, results
    assert results.count(("PreconditionFailed", 412)) == 5, results
    assert c.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"writer %d" % winners[0]


def test_conditional_get_gives_304_with_etag(s3, c):
    key = "cond/model.onnx"
    data = blob(5000)
    etag = c.put_object(Bucket=BUCKET, Key=key, Body=data)["ETag"]
    assert etag.startswith('"') and etag.endswith('"'), "ETag is quoted on the wire"
    r = s3.request("GET", key, headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.content == b""
    assert r.headers["ETag"] == etag and "Last-Modified" in r.headers
    assert s3.request("HEAD", key, headers={"If-None-Match": etag}).status_code == 304
    r = s3.request("GET", key, headers={"If-None-Match": md5_etag(b"older")})
    assert r.status_code == 200 and r.content == data and r.headers["ETag"] == etag
    # The ETag without its quotes is another tag: no match (send it back as received).
    assert s3.request("GET", key, headers={"If-None-Match": etag.strip('"')}).status_code == 200
    assert s3.request("GET", key, headers={"If-Match": md5_etag(b"older")}).status_code == 412
    assert s3.count("GET", key, 304) == 1
    assert s3.count("HEAD", key, 304) == 1
    assert s3.count("GET", key, 200) == 2
    assert s3.count("GET", key, 412) == 1


def test_range_from_offset_resumes(s3, c):
    key = "range/model.onnx"
    data = blob(10000)
    c.put_object(Bucket=BUCKET, Key=key, Body=data)
    r = s3.request("GET", key, headers={"Range": "bytes=4000-"})
    assert r.status_code == 206
    assert r.headers["Content-Range"] == "bytes 4000-9999/10000"
    assert r.headers["Content-Length"] == "6000" and r.content == data[4000:]
    r = s3.request("GET", key, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    r = s3.request("GET", key, headers={"Range": "bytes=-300"})
    assert r.status_code == 206 and r.content == data[-300:]
    assert r.headers["Content-Range"] == "bytes 9700-9999/10000"
    assert s3.request("GET", key, headers={"Range": "bytes=10000-"}).status_code == 416
    # A resume pinned to the ETag it started with: served while unchanged, 412 once replaced.
    etag = c.head_object(Bucket=BUCKET, Key=key)["ETag"]
    r = s3.request("GET", key, headers={"Range": "bytes=9000-", "If-Match": etag})
    assert r.status_code == 206 and r.content == data[9000:]
    c.put_object(Bucket=BUCKET, Key=key, Body=data[::-1])
    r = s3.request("GET", key, headers={"Range": "bytes=9000-", "If-Match": etag})
    assert r.status_code == 412 and "PreconditionFailed" in r.text
    rec = s3.records("GET", key, 206)[0]
    assert rec["range"] == "bytes=4000-" and rec["length"] == 6000


# ------------------------------------------------------------------ faults
def test_truncate_fault_interrupts_a_download_once(s3, c):
    key = "fault/model.onnx"
    data = blob(200_000)
    c.put_object(Bucket=BUCKET, Key=key, Body=data)
    s3.fault(key, "truncate", bytes=1000)
    with pytest.raises(ResponseStreamingError, match=r"IncompleteRead\(1000 bytes read"):
        c.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert s3.faults() == {}
    # An orderly close after 5000 bytes: requests (urllib3 1.x) does not check Content-Length.
    s3.fault(key, "truncate", bytes=5000)
    r = s3.request("GET", key)
    assert r.status_code == 200 and r.headers["Content-Length"] == str(len(data))
    got = r.content
    assert got == data[:5000]
    # Resume where it stopped.
    rest = s3.request("GET", key, headers={"Range": "bytes=%d-" % len(got)})
    assert rest.status_code == 206 and bytes(got) + rest.content == data
    assert c.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data
    cut = s3.records("GET", key, fault="truncate")
    assert [(x["status"], x["sent"], x["length"]) for x in cut] == [
        (200, 1000, 200_000), (200, 5000, 200_000)]
    assert s3.count("GET", key, 200) == 3 and s3.count("GET", key, 206) == 1
    # close=rst: the connection is reset instead.
    s3.fault(key, "truncate", bytes=100, close="rst")
    with pytest.raises(requests.exceptions.RequestException, match="reset by peer"):
        s3.request("GET", key).content


def test_truncate_is_consumed_only_by_a_body(s3, c):
    key = "fault/etag.onnx"
    etag = c.put_object(Bucket=BUCKET, Key=key, Body=blob(3000))["ETag"]
    s3.fault(key, "truncate", bytes=10)
    assert s3.request("GET", key, headers={"If-None-Match": etag}).status_code == 304
    assert s3.faults() != {}, "a 304 used up the truncate fault"
    r = s3.request("GET", key)
    assert r.headers["Content-Length"] == "3000" and len(r.content) == 10


def test_status_faults_count_down(s3, c):
    key = "fault/503.onnx"
    c.put_object(Bucket=BUCKET, Key=key, Body=b"data")
    s3.fault(key, "503", times=2)
    for _ in range(2):
        with pytest.raises(ClientError) as e:
            c.get_object(Bucket=BUCKET, Key=key)
        assert error_code(e.value) == ("SlowDown", 503)
    assert c.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"data"
    assert s3.count("GET", key, 503) == 2 and s3.count("GET", key, 200) == 1
    # On another method, and 500.
    s3.fault("fault/current.json", "500", method="PUT")
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=BUCKET, Key="fault/current.json", Body=b"{}")
    assert error_code(e.value) == ("InternalError", 500)
    c.put_object(Bucket=BUCKET, Key="fault/current.json", Body=b"{}")
    # Faults queue in order: 503, then a cut download, then normal service.
    s3.fault(key, "503")
    s3.fault(key, "truncate", bytes=1)
    assert s3.request("GET", key).status_code == 503
    assert s3.request("GET", key).content == b"d"
    assert s3.request("GET", key).content == b"data"


def test_delay_fault_makes_concurrent_requests_overlap(s3, c):
    key = "fault/slow.onnx"
    c.put_object(Bucket=BUCKET, Key=key, Body=blob(1000))
    s3.fault(key, "delay", ms=800, times=3)
    took = []

    def get():
        t0 = time.monotonic()
        s3.request("GET", key).raise_for_status()
        took.append(time.monotonic() - t0)

    threads = [threading.Thread(target=get) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(took) == 3 and min(took) >= 0.75, took
    recs = s3.records("GET", key, 200, fault="delay")
    assert len(recs) == 3
    # Every request had arrived before the first one was answered.
    assert max(r["t"] for r in recs) < min(r["t"] + r["ms"] for r in recs), recs
    t0 = time.monotonic()
    s3.request("GET", key).raise_for_status()
    assert time.monotonic() - t0 < 0.5


def test_reset_fault_closes_without_answer(s3, c):
    key = "fault/reset.onnx"
    c.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    s3.fault(key, "reset")
    with pytest.raises(requests.exceptions.ConnectionError):
        s3.request("GET", key)
    assert s3.request("GET", key).content == b"x"
    assert s3.count("GET", key, 0, fault="reset") == 1


# ------------------------------------------------------------------ records
def test_stats_count_what_happened(s3, c):
    key = "stats/model.onnx"
    etag = c.put_object(Bucket=BUCKET, Key=key, Body=b"m" * 100)["ETag"]
    for _ in range(2):
        c.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    s3.request("GET", key, headers={"If-None-Match": etag})
    c.head_object(Bucket=BUCKET, Key=key)
    with pytest.raises(ClientError):
        c.get_object(Bucket=BUCKET, Key="stats/missing.onnx")
    c.list_objects_v2(Bucket=BUCKET, Prefix="stats/")
    st = s3.stats()
    assert st["counts"] == {
        "PUT /models/stats/model.onnx 200": 1,
        "GET /models/stats/model.onnx 200": 2,
        "GET /models/stats/model.onnx 304": 1,
        "HEAD /models/stats/model.onnx 200": 1,
        "GET /models/stats/missing.onnx 404": 1,
        "GET /models 200": 1,
    }
    assert s3.count("GET", key) == 3
    assert s3.count("GET", "/models/stats/model.onnx", (200, 304)) == 3
    assert s3.count("GET", "", 200) == 1  # the listing
    assert s3.records("GET", "")[0]["query"].startswith("list-type=2")
    put = s3.records("PUT", key)[0]
    assert put["auth"] == "sigv4" and put["akid"] == s3.access_key and put["req_length"] == 100
    assert [r["seq"] for r in st["requests"]] == sorted(r["seq"] for r in st["requests"])
    # The same records, one JSON line each, in the log file.
    lines = [json.loads(x) for x in s3.records_path.read_text().splitlines()]
    assert [x["seq"] for x in lines[-7:]] == [r["seq"] for r in st["requests"]]
    s3.reset()
    assert s3.stats() == {"requests": [], "counts": {}}


# ------------------------------------------------------------------ S3 behaviour s3rver lacks
def test_list_objects_v2_like_s3(s3, c):
    keys = ["ls/digits/current.json", "ls/digits/versions/1.0.0/manifest.json",
            "ls/digits/versions/1.0.0/model.onnx", "ls/digits/versions/1.10.0/manifest.json",
            "ls/digits/versions/1.2.0/manifest.json",
            "ls/unpromoted/versions/1/manifest.json",  # no current.json: only a sub-folder
            "ls/z.txt"]
    for k in keys:
        c.put_object(Bucket=BUCKET, Key=k, Body=b"x")
    r = c.list_objects_v2(Bucket=BUCKET, Prefix="ls/", Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["ls/digits/", "ls/unpromoted/"]
    assert [o["Key"] for o in r["Contents"]] == ["ls/z.txt"]
    assert r["KeyCount"] == 3 and r["Contents"][0]["ETag"] == md5_etag(b"x")
    # Common prefixes count against MaxKeys and paginate; tokens need URL encoding.
    pages = list(c.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix="ls/digits/versions/", Delimiter="/",
        PaginationConfig={"PageSize": 1}))
    assert [[p["Prefix"] for p in pg.get("CommonPrefixes", [])] for pg in pages] == [
        ["ls/digits/versions/1.0.0/"], ["ls/digits/versions/1.10.0/"],
        ["ls/digits/versions/1.2.0/"]]
    token = pages[0]["NextContinuationToken"]
    assert "+" in token and "/" in token and token.endswith("=")
    flat = [o["Key"] for pg in c.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix="ls/", PaginationConfig={"PageSize": 2}) for o in pg["Contents"]]
    assert flat == sorted(keys)
    r = c.list_objects_v2(Bucket=BUCKET, Prefix="ls/", StartAfter="ls/digits/versions/1.2.0/")
    assert [o["Key"] for o in r["Contents"]] == sorted(keys)[4:]
    s3.fault("", "503")  # faults on the bucket hit its listings
    with pytest.raises(ClientError) as e:
        c.list_objects_v2(Bucket=BUCKET, Prefix="ls/")
    assert error_code(e.value) == ("SlowDown", 503)
    assert s3.count("GET", "", 503) == 1


def test_reads_never_see_a_torn_overwrite(s3, c):
    key = "atomic/current.bin"
    a, b = b"A" * 1_500_000, b"B" * 1_000_000
    c.put_object(Bucket=BUCKET, Key=key, Body=a)
    stop = threading.Event()
    bad, reads = [], [0]

    def writer():
        cl = s3.client()
        i = 0
        while not stop.is_set():
            cl.put_object(Bucket=BUCKET, Key=key, Body=b if i % 2 == 0 else a)
            i += 1

    def reader():
        cl = s3.client()
        while not stop.is_set():
            r = cl.get_object(Bucket=BUCKET, Key=key)
            body = r["Body"].read()
            reads[0] += 1
            if body not in (a, b) or md5_etag(body) != r["ETag"]:
                bad.append((len(body), r["ETag"]))

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader)
                                                   for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join()
    assert reads[0] > 10 and not bad, (reads, bad[:5])


def test_multipart_rules(s3, c):
    key = "mp/big.onnx"
    part1, part2 = blob(5 * 1024 * 1024, 1), blob(1000, 2)
    up = c.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    e1 = c.upload_part(Bucket=BUCKET, Key=key, UploadId=up, PartNumber=1, Body=part1)["ETag"]
    e2 = c.upload_part(Bucket=BUCKET, Key=key, UploadId=up, PartNumber=2, Body=part2)["ETag"]
    with pytest.raises(ClientError) as e:
        c.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=up, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": md5_etag(b"other")},
                      {"PartNumber": 2, "ETag": e2}]})
    assert error_code(e.value) == ("InvalidPart", 400)
    r = c.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    md5s = hashlib.md5(bytes.fromhex(e1.strip('"')) + bytes.fromhex(e2.strip('"'))).hexdigest()
    assert r["ETag"] == '"%s-2"' % md5s
    got = c.get_object(Bucket=BUCKET, Key=key)
    assert got["ETag"] == r["ETag"] and got["Body"].read() == part1 + part2
    # Every part but the last must be at least 5 MiB.
    up = c.create_multipart_upload(Bucket=BUCKET, Key="mp/small.onnx")["UploadId"]
    parts = [{"PartNumber": i, "ETag": c.upload_part(Bucket=BUCKET, Key="mp/small.onnx",
                                                     UploadId=up, PartNumber=i,
                                                     Body=b"s" * 10)["ETag"]} for i in (1, 2)]
    with pytest.raises(ClientError) as e:
        c.complete_multipart_upload(Bucket=BUCKET, Key="mp/small.onnx", UploadId=up,
                                    MultipartUpload={"Parts": parts})
    assert error_code(e.value) == ("EntityTooSmall", 400)


# ------------------------------------------------------------------ store documents
def test_upload_version_and_promote(s3, c, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "ident",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "ident.onnx"
    onnx.save(model, str(path))
    data = path.read_bytes()

    m1 = s3support.upload_version(c, BUCKET, "pre/fix", "ident", "1.0.0", path)
    stored, _ = s3support.get_object(c, BUCKET, "pre/fix/ident/versions/1.0.0/manifest.json")
    assert stored == m1
    doc = json.loads(m1)
    assert list(doc) == sorted(doc) and m1.endswith(b"}\n") and b'\n  "files"' in m1
    assert doc["files"] == [{"path": "model.onnx", "sha256": hashlib.sha256(data).hexdigest(),
                             "size": len(data)}]
    assert doc["inputs"] == [{"name": "x", "dtype": "float32", "shape": [-1, 3]}]
    assert doc["outputs"] == [{"name": "y", "dtype": "float32", "shape": [-1, 3]}]
    assert doc["framework"] == "onnx" and doc["created_at"].endswith("Z")
    assert c.get_object(Bucket=BUCKET, Key="pre/fix/ident/versions/1.0.0/model.onnx")[
        "Body"].read() == data
    assert s3support.read_current(c, BUCKET, "pre/fix", "ident") is None

    s3.reset()
    s3support.promote(c, BUCKET, "pre/fix", "ident", "1.0.0")
    cur = s3support.read_current(c, BUCKET, "pre/fix", "ident")
    assert cur["version"] == "1.0.0" and cur["history"] == []
    assert cur["sha256"] == hashlib.sha256(m1).hexdigest()
    assert s3.records("PUT", "pre/fix/ident/current.json")[0]["if_none_match"] == "*"

    m2 = s3support.upload_version(c, BUCKET, "pre/fix", "ident", "2.0.0", path)
    s3support.promote(c, BUCKET, "pre/fix", "ident", "2.0.0")
    cur2 = s3support.read_current(c, BUCKET, "pre/fix", "ident")
    assert cur2["version"] == "2.0.0" and cur2["sha256"] == hashlib.sha256(m2).hexdigest()
    assert cur2["history"] == [{"version": "1.0.0", "promoted_at": cur["promoted_at"]}]
    assert s3.records("PUT", "pre/fix/ident/current.json")[1]["if_match"].startswith('"')
    s3support.promote(c, BUCKET, "pre/fix", "ident", "2.0.0", pointer_sha="model")
    cur3 = s3support.read_current(c, BUCKET, "pre/fix", "ident")
    assert cur3["history"] == cur2["history"]  # re-promoting the current version adds nothing
    assert cur3["sha256"] == hashlib.sha256(data).hexdigest()
    with pytest.raises(ValueError):
        s3support.promote(c, BUCKET, "pre/fix", "ident", "9.9.9")


def test_env_and_client_settings(s3):
    env = s3.env()
    assert env == {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key,
                   "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3.endpoint}
    assert s3.endpoint.startswith("http://127.0.0.1:") and s3.port > 0
    merged = s3.env({"PATH": "/bin", "AWS_PROFILE": "prod", "AWS_SESSION_TOKEN": "t"})
    assert merged == dict(env, PATH="/bin")
    assert s3.uri() == "s3://models" and s3.uri("a/b/") == "s3://models/a/b"


def test_session_token_is_required_when_configured(tmp_path):
    with s3support.S3Server(session_token="FwoGZXIvYXdzEXAMPLE+token/=") as srv:
        srv.start(tmp_path)
        assert srv.env()["AWS_SESSION_TOKEN"] == "FwoGZXIvYXdzEXAMPLE+token/="
        c = srv.client()
        c.put_object(Bucket=BUCKET, Key="t.bin", Body=b"t")
        with pytest.raises(ClientError) as e:
            srv.client(session_token="").get_object(Bucket=BUCKET, Key="t.bin")
        assert error_code(e.value) == ("InvalidToken", 400)
        assert srv.records("PUT", "t.bin")[0]["token"] == "FwoGZXIvYXdzEXAMPLE+token/="
    assert not srv.alive()
