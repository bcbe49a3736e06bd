"""Object-upload triggers (issue 6, items 2-5): `triggers:` bind a source (a local folder watched
with inotify, or an S3 bucket/prefix told by S3 event notifications at POST /v1/events/s3) to a
function and an output location. Every new object (JSON Lines, CSV of numbers, .npy) is run through
the function in batches and published as `<key>.out.jsonl` (one line per input row, in order:
{"row", "outputs"} or {"row", "error"}) plus `<key>.summary.json`; jobs are idempotent per
(source, key, ETag), listed at GET /v1/jobs, counted in /metrics, and survive SIGKILL.

Real peers only: the server is build/…/pilotlight, the S3 side is the s3 fixture (s3rver with
SigV4 verification and request records) written and read with boto3, and the notifications are
the JSON documents S3 itself sends for those uploads (direct and SNS-wrapped). The reference for
every output row is the same row through the synchronous POST /v1/functions/digits/invoke.

The crash test kills the server (SIGKILL) while a 10,000-row CSV is being processed by a slow
process function, restarts it on the same state directory, stops that one gracefully (SIGTERM)
further on, restarts again and checks the published output has each row exactly once, in order,
with the right outputs, and that no more than the batch in flight at each stop ran twice.

Also: objects that cannot be parsed as a whole and a model that cannot load fail the object (no
output); a function busy with synchronous traffic (429) must delay an object, not fail it; bad
`triggers:` entries stop `pilotlight serve` with a message naming triggers[i].
"""

import base64
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote_plus

import pytest
import requests

import s3support
from support import (BIN, CHILD_ENV, SleepCalibration, assert_error, assert_ok, cli_output,
                     digits_rows, free_port, sleep_body, wait_until)

LAMBDA_DIR = (Path(__file__).resolve().parent / "lambda").absolute()
BOOTSTRAP = ["/usr/bin/python3", str(LAMBDA_DIR / "bootstrap.py")]
BUCKET = "models"
TOKEN = "s3cr3t-trigger-token"
DONE = ("done", "failed")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def file_uri(path):
    return "file://" + str(Path(path).resolve())


def config_text(cfg):
    """The config as YAML text: JSON is YAML (flow style), and lists of mappings need it."""
    return json.dumps(cfg, indent=1)


def jobs(server):
    return assert_ok(server.get("/v1/jobs", params={"limit": "1000"}), "GET /v1/jobs:")["jobs"]


def jobs_for(server, source, key=None):
    return [j for j in jobs(server) if j["source"] == source and (key is None or j["key"] == key)]


def wait_jobs_final(server, source, keys, timeout=30.0):
    """Waits until every key has a job of `source` in a final state; returns key -> newest job."""
    keys = list(keys)

    def check():
        found = {}
        for j in jobs(server):  # newest first
            if j["source"] == source and j["key"] in keys and j["key"] not in found:
                found[j["key"]] = j
        if len(found) == len(keys) and all(j["status"] in DONE for j in found.values()):
            return found
        return None

    return wait_until(check, timeout, 0.1, lambda: "jobs of %s for %s to finish; jobs now: %s\n%s" % (
        source, keys, json.dumps(jobs(server), indent=1)[:4000], server.log_text()[-3000:]))


def read_jsonl_bytes(data):
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    assert text.endswith("\n"), "output does not end with a newline: %r" % text[-200:]
    return [json.loads(l) for l in text.splitlines()]


def reference(server, rows):
    """The synchronous answer of digits for `rows` (one list of 10 probabilities per row)."""
    body = assert_ok(server.invoke("digits", {"inputs": rows}), "reference invoke:")
    assert len(body["outputs"]) == len(rows)
    return body["outputs"]


def assert_close(got, want, what, tol=1e-5):
    assert isinstance(got, list) and len(got) == len(want), "%s: %r vs %r" % (what, got, want)
    for a, b in zip(got, want):
        assert abs(a - b) <= tol, "%s: %r vs %r" % (what, got, want)


def check_output(lines, expected, what):
    """lines: the parsed .out.jsonl; expected: per row, a list of 10 probabilities, a dict of
    them by output name, or an error marker ("error", substring-or-None)."""
    assert [l.get("row") for l in lines] == list(range(len(expected))), (
        "%s: rows are not 0..%d once each, in order: %r" % (what, len(expected) - 1,
                                                            [l.get("row") for l in lines]))
    for line, want in zip(lines, expected):
        if isinstance(want, tuple):
            assert set(line) == {"row", "error"}, "%s row %d: want an error line, got %r" % (
                what, line["row"], line)
            err = line["error"]
            assert err.get("type") == "invalid_input", "%s row %d: %r" % (what, line["row"], line)
            assert isinstance(err.get("message"), str) and err["message"], line
            if want[1]:
                assert want[1] in err["message"], "%s row %d: %r lacks %r" % (
                    what, line["row"], line, want[1])
        else:
            assert set(line) == {"row", "outputs"}, "%s row %d: want outputs, got %r" % (
                what, line["row"], line)
            if isinstance(want, dict):  # named inputs answer named outputs, as on /invoke
                assert isinstance(line["outputs"], dict) and set(line["outputs"]) == set(want), (
                    "%s row %d: %r" % (what, line["row"], line))
                for name, v in want.items():
                    assert_close(line["outputs"][name], v, "%s row %d %s" % (what, line["row"], name))
            else:
                assert_close(line["outputs"], want, "%s row %d" % (what, line["row"]))


def check_summary(summary, key, rows, ok, errors, function="digits", version="1.0.0"):
    assert summary.get("key") == key, summary
    assert (summary.get("rows"), summary.get("ok"), summary.get("errors")) == (rows, ok, errors), summary
    assert summary.get("function") == function, summary
    if version is not None:
        assert summary.get("version") == version, summary
    for k in ("started_at", "finished_at"):
        datetime.strptime(summary[k], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert summary["started_at"] <= summary["finished_at"], summary


def metric(server, name, **labels):
    return server.metrics().sum(name, **labels)


def write_atomically(path, data):
    """Writes a file the way uploaders that care do: a hidden temporary name, then rename."""
    path = Path(path)
    tmp = path.parent / (".incoming-" + path.name)
    tmp.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    os.rename(tmp, path)


def npy_bytes(array):
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def out_files(folder):
    return sorted(p.name for p in Path(folder).iterdir()
                  if p.name.endswith(".out.jsonl") or p.name.endswith(".summary.json"))


# --- input files for digits ------------------------------------------------------------------
def digits_jsonl():
    """30 lines: every accepted line form, and three kinds of bad line at rows 12, 13, 14.
    Returns (text, expected) where expected[i] is row i's digits input or ("error", substring)."""
    rows = digits_rows(30)
    lines, expected = [], []
    for i, r in enumerate(rows):
        if i == 10:
            lines.append(json.dumps({"inputs": r}))
        elif i == 11:
            lines.append(json.dumps({"inputs": {"input": r}}))
        elif i == 12:
            lines.append('{"inputs": [1, 2,')  # not JSON
            expected.append(("error", None))
            continue
        elif i == 13:
            lines.append("[1, 2, 3]")  # JSON, but 3 values for a 64-value input: HTTP 400
            expected.append(("error", None))
            continue
        elif i == 14:
            lines.append('{"features": [1, 2]}')  # neither a row nor {"inputs": ...}
            expected.append(("error", None))
            continue
        else:
            lines.append(json.dumps(r))
        expected.append(r)
    return "\n".join(lines) + "\n", expected


def digits_csv():
    """A header and 20 rows (digits rows 30..49); row 5 has a non-numeric cell, row 9 has 3
    cells. Returns (text, expected)."""
    rows = digits_rows(20, 30)
    out = [",".join("pixel%d" % k for k in range(64))]
    expected = []
    for i, r in enumerate(rows):
        if i == 5:
            cells = [str(v) for v in r]
            cells[17] = "seven"
            out.append(",".join(cells))
            expected.append(("error", "seven"))
        elif i == 9:
            out.append("1,2,3")
            expected.append(("error", None))
        else:
            out.append(",".join(str(v) for v in r))
            expected.append(r)
    return "\r\n".join(out) + "\r\n", expected  # CRLF, as spreadsheets write it


# --------------------------------------------------------------------------------------------
# 1. Local folders
# --------------------------------------------------------------------------------------------
def test_local_folder_jsonl_csv_npy_outputs_match_sync_invoke(start_server, tmp_path):
    import numpy as np

    inbox, outbox, shared = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "shared"
    for d in (inbox, outbox, shared):
        d.mkdir()
    # Present before the server starts: found by the start-up scan.
    early_rows = digits_rows(7, 100)
    (inbox / "early.jsonl").write_text("".join(json.dumps(r) + "\n" for r in early_rows))
    # Files no trigger may take as inputs (ours, hidden, temporary), present at start-up too.
    decoys = {"decoy.out.jsonl": '{"row":0,"outputs":[1]}\n', "decoy.summary.json": "{}\n",
              ".hidden.jsonl": "[1]\n", "upload.tmp": "[1]\n", "upload.part": "[1]\n"}
    for name, text in decoys.items():
        (inbox / name).write_text(text)
    src, same = file_uri(inbox), file_uri(shared)
    cfg = {"triggers": [
        {"source": src, "function": "digits", "output": file_uri(outbox), "batch_size": 8},
        {"source": same, "function": "digits", "output": same, "batch_size": 256},
    ]}
    server = start_server(config_text(cfg))
    ref_early = reference(server, early_rows)
    wait_jobs_final(server, src, ["early.jsonl"])

    # While it runs: a .jsonl (written in place), a .csv and two .npy (renamed into place).
    jsonl_text, jsonl_expected = digits_jsonl()
    (inbox / "batch.jsonl").write_text(jsonl_text)
    csv_text, csv_expected = digits_csv()
    write_atomically(inbox / "table.csv", csv_text)
    npy_rows = digits_rows(25, 50)
    write_atomically(inbox / "pixels.npy", npy_bytes(np.asarray(npy_rows, dtype=np.float32)))
    u8_rows = digits_rows(5, 80)
    write_atomically(inbox / "small.npy", npy_bytes(np.asarray(u8_rows, dtype=np.uint8)))
    # A folder that is both source and output: our own outputs must not become inputs.
    same_rows = digits_rows(4, 90)
    (shared / "same.jsonl").write_text("".join(json.dumps(r) + "\n" for r in same_rows))
    for name, text in decoys.items():
        (shared / name).write_text(text)
    (inbox / "empty.jsonl").write_bytes(b"")  # no rows: an empty output and a summary

    keys = ["early.jsonl", "batch.jsonl", "table.csv", "pixels.npy", "small.npy", "empty.jsonl"]
    final = wait_jobs_final(server, src, keys)
    wait_jobs_final(server, same, ["same.jsonl"])
    for k, j in final.items():
        assert j["status"] == "done", j
        assert {"id", "source", "key", "etag", "status", "rows", "rows_done", "ok", "errors",
                "error"} <= set(j), j
    listed = jobs(server)
    assert [j["id"] for j in listed] == sorted((j["id"] for j in listed), reverse=True), listed

    def load(folder, key):
        lines = read_jsonl_bytes((folder / (key + ".out.jsonl")).read_bytes())
        summary = json.loads((folder / (key + ".summary.json")).read_text())
        return lines, summary

    # early.jsonl
    lines, summary = load(outbox, "early.jsonl")
    check_output(lines, ref_early, "early.jsonl")
    check_summary(summary, "early.jsonl", 7, 7, 0)

    # batch.jsonl: outputs equal the synchronous ones, errors on rows 12, 13, 14 only.
    good = [w for w in jsonl_expected if not isinstance(w, tuple)]
    ref = iter(reference(server, good))
    want = [w if isinstance(w, tuple) else next(ref) for w in jsonl_expected]
    want[11] = {"probabilities": want[11]}  # {"inputs": {"input": row}}: named outputs
    lines, summary = load(outbox, "batch.jsonl")
    check_output(lines, want, "batch.jsonl")
    assert [l["row"] for l in lines if "error" in l] == [12, 13, 14], lines
    check_summary(summary, "batch.jsonl", 30, 27, 3)
    assert (final["batch.jsonl"]["rows"], final["batch.jsonl"]["rows_done"], final["batch.jsonl"]["ok"],
            final["batch.jsonl"]["errors"]) == (30, 30, 27, 3), final["batch.jsonl"]

    # table.csv: the header is skipped; rows 5 and 9 are errors.
    good = [w for w in csv_expected if not isinstance(w, tuple)]
    ref = iter(reference(server, good))
    want = [w if isinstance(w, tuple) else next(ref) for w in csv_expected]
    lines, summary = load(outbox, "table.csv")
    check_output(lines, want, "table.csv")
    check_summary(summary, "table.csv", 20, 18, 2)

    # .npy, float32 and uint8
    lines, summary = load(outbox, "pixels.npy")
    check_output(lines, reference(server, npy_rows), "pixels.npy")
    check_summary(summary, "pixels.npy", 25, 25, 0)
    lines, summary = load(outbox, "small.npy")
    check_output(lines, reference(server, u8_rows), "small.npy")
    check_summary(summary, "small.npy", 5, 5, 0)

    # An empty object: no rows, an empty output, a summary saying so.
    assert (outbox / "empty.jsonl.out.jsonl").read_bytes() == b""
    check_summary(json.loads((outbox / "empty.jsonl.summary.json").read_text()), "empty.jsonl", 0, 0, 0,
                  version=None)

    # source == output: exactly one job there, and no output of an output.
    lines, summary = load(shared, "same.jsonl")
    check_output(lines, reference(server, same_rows), "same.jsonl")
    check_summary(summary, "same.jsonl", 4, 4, 0)
    time.sleep(1.0)  # give the watcher time to (wrongly) pick up the published files
    all_jobs = jobs(server)
    assert sorted(j["key"] for j in all_jobs if j["source"] == same) == ["same.jsonl"], all_jobs
    assert sorted(j["key"] for j in all_jobs if j["source"] == src) == sorted(keys), all_jobs
    assert out_files(shared) == sorted(["decoy.out.jsonl", "decoy.summary.json",
                                        "same.jsonl.out.jsonl", "same.jsonl.summary.json"])
    assert out_files(outbox) == sorted([k + ".out.jsonl" for k in keys] + [k + ".summary.json" for k in keys])
    # Input files are read in place, never moved or changed.
    assert (inbox / "batch.jsonl").read_bytes() == jsonl_text.encode()
    assert (inbox / "table.csv").read_bytes() == csv_text.encode()
    # No temporary files left next to the outputs.
    assert not [p.name for p in outbox.iterdir() if ".tmp" in p.name], list(outbox.iterdir())

    m = server.metrics()
    assert m.sum("pilotlight_trigger_objects_total", result="done") == 7, m.text
    assert m.sum("pilotlight_trigger_objects_total", result="failed") == 0
    assert m.sum("pilotlight_trigger_rows_total") == 7 + 30 + 20 + 25 + 5 + 4


def test_local_restart_does_no_duplicate_work_and_a_changed_file_runs_again(start_server, tmp_path):
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    outbox.mkdir()
    state = tmp_path / "state"
    src = file_uri(inbox)
    cfg = config_text({"triggers": [{"source": src, "function": "digits", "output": file_uri(outbox),
                                     "batch_size": 4}]})
    rows_a = digits_rows(10, 200)
    (inbox / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows_a))
    server = start_server(cfg, state_dir=state)
    job = wait_jobs_final(server, src, ["a.jsonl"])["a.jsonl"]
    assert job["status"] == "done", job
    out = outbox / "a.jsonl.out.jsonl"
    before = (out.read_bytes(), out.stat().st_mtime_ns, out.stat().st_ino,
              (outbox / "a.jsonl.summary.json").read_bytes())
    assert server.terminate() == 0, server.diagnostics()

    # Restart on the same state: the start-up scan sees a.jsonl again, with the same ETag.
    server2 = start_server(cfg, state_dir=state)
    time.sleep(1.5)
    js = jobs_for(server2, src)
    assert len(js) == 1 and js[0]["id"] == job["id"] and js[0]["status"] == "done", js
    after = (out.read_bytes(), out.stat().st_mtime_ns, out.stat().st_ino,
             (outbox / "a.jsonl.summary.json").read_bytes())
    assert after == before, "the output was rewritten after a restart"
    assert metric(server2, "pilotlight_trigger_rows_total") == 0
    assert metric(server2, "pilotlight_trigger_objects_total") == 0

    # A changed object (new ETag) is processed again, and its output replaced.
    rows_b = digits_rows(6, 220)
    write_atomically(inbox / "a.jsonl", "".join(json.dumps(r) + "\n" for r in rows_b))

    def second_job():
        js = jobs_for(server2, src, "a.jsonl")
        return js if len(js) == 2 and js[0]["status"] in DONE else None

    js = wait_until(second_job, 20, 0.1, lambda: "a second job for the changed a.jsonl: %s" % jobs(server2))
    assert js[0]["status"] == "done" and js[0]["etag"] != js[1]["etag"], js
    lines = read_jsonl_bytes(out.read_bytes())
    check_output(lines, reference(server2, rows_b), "a.jsonl (changed)")
    check_summary(json.loads((outbox / "a.jsonl.summary.json").read_text()), "a.jsonl", 6, 6, 0)


# --------------------------------------------------------------------------------------------
# 2. S3 sources: boto3 uploads, the notification S3 would send, SigV4 reads at the S3 server
# --------------------------------------------------------------------------------------------
def s3_notification(s3, key, put_response, size, event_name="ObjectCreated:Put", bucket=BUCKET):
    """The event notification S3 sends for a PutObject (notification-content-structure):
    URL-encoded key (space -> '+'), the ETag without quotes, size, sequencer, request ids."""
    meta = put_response["ResponseMetadata"]
    headers = meta.get("HTTPHeaders", {})
    now = datetime.now(timezone.utc)
    return {"Records": [{
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": s3.region,
        "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (now.microsecond // 1000),
        "eventName": event_name,
        "userIdentity": {"principalId": "AWS:AIDA" + s3.access_key[:16]},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": meta.get("RequestId") or headers.get("x-amz-request-id", "0"),
                             "x-amz-id-2": meta.get("HostId") or headers.get("x-amz-id-2", "")},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "pilotlight-batch-inference",
            "bucket": {"name": bucket, "ownerIdentity": {"principalId": "A3NL1KOZZKEXAMPLE"},
                       "arn": "arn:aws:s3:::" + bucket},
            "object": {"key": quote_plus(key, safe="/"), "size": size,
                       "eTag": put_response["ETag"].strip('"'),
                       "sequencer": "%018X" % time.time_ns()},
        },
    }]}


def sns_wrap(doc):
    """The SNS envelope an HTTP(S) subscription receives (the S3 document as a string)."""
    now = datetime.now(timezone.utc)
    return {"Type": "Notification", "MessageId": str(uuid.uuid4()),
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:pilotlight-uploads",
            "Subject": "Amazon S3 Notification", "Message": json.dumps(doc),
            "Timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (now.microsecond // 1000),
            "SignatureVersion": "1",
            "Signature": base64.b64encode(b"not verified by pilotlight").decode(),
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe"}


def post_notification(server, doc, token=TOKEN, raw=None):
    params = {} if token is None else {"token": token}
    data = raw if raw is not None else json.dumps(doc)
    return server.post("/v1/events/s3", params=params, data=data,
                       headers={"Content-Type": "text/plain; charset=UTF-8"})


def s3_get(client, key):
    data, _ = s3support.get_object(client, BUCKET, key)
    return data


@pytest.fixture
def s3_trigger_server(s3, start_server):
    s3.reset()
    prefix = "trig-%s" % uuid.uuid4().hex[:8]
    cfg = {"triggers": [{"source": s3.uri(prefix + "/in"), "function": "digits",
                         "output": s3.uri(prefix + "/out"), "batch_size": 8, "token": TOKEN}]}
    server = start_server(config_text(cfg), env=s3.env(CHILD_ENV))
    return server, prefix


def test_s3_notification_runs_the_uploaded_object_once(s3, s3_trigger_server):
    server, prefix = s3_trigger_server
    c = s3.client()
    source = s3.uri(prefix + "/in")
    rows = digits_rows(20, 120)
    text = "".join(json.dumps(r) + "\n" for r in rows[:9]) + "[0.5]\n" + \
        "".join(json.dumps(r) + "\n" for r in rows[9:])
    key = prefix + "/in/batch one.jsonl"  # a space: '+' in the notification
    put = c.put_object(Bucket=BUCKET, Key=key, Body=text.encode())
    event = s3_notification(s3, key, put, len(text))
    assert event["Records"][0]["s3"]["object"]["key"] == prefix + "/in/batch+one.jsonl"

    # Authentication: no token, a wrong token -> 403 and no job.
    assert_error(post_notification(server, event, token=None), 403, "forbidden")
    assert_error(post_notification(server, event, token="wrong-" + TOKEN), 403, "forbidden")
    assert jobs(server) == []

    r = post_notification(server, event)
    assert assert_ok(r, "notification:") == {"jobs_created": 1}, r.text
    job = wait_jobs_final(server, source, ["batch one.jsonl"])["batch one.jsonl"]
    assert job["status"] == "done", job
    assert job["etag"].strip('"') == put["ETag"].strip('"'), job

    out_key = prefix + "/out/batch one.jsonl.out.jsonl"
    sum_key = prefix + "/out/batch one.jsonl.summary.json"
    lines = read_jsonl_bytes(s3_get(c, out_key))
    ref = reference(server, rows)
    check_output(lines, ref[:9] + [("error", None)] + ref[9:], "batch one.jsonl")
    check_summary(json.loads(s3_get(c, sum_key)), "batch one.jsonl", 21, 20, 1)

    # The S3 server saw pilotlight read the input, signed (SigV4 with our key), and write both.
    gets = s3.records("GET", key, status=(200, 206))
    assert gets and all(g["auth"] == "sigv4" and g.get("akid") == s3.access_key for g in gets), gets
    assert s3.count("PUT", out_key, 200) == 1, s3.stats()["counts"]
    assert s3.count("PUT", sum_key, 200) == 1, s3.stats()["counts"]

    # Redelivery (S3 delivers at least once): no new job, no new read, no new output.
    reads = len(s3.records("GET", key))
    r = post_notification(server, event)
    assert assert_ok(r, "redelivery:") == {"jobs_created": 0}, r.text
    r = post_notification(server, sns_wrap(event))
    assert assert_ok(r, "redelivery through SNS:") == {"jobs_created": 0}, r.text
    time.sleep(1.5)
    assert len(jobs_for(server, source, "batch one.jsonl")) == 1, jobs(server)
    assert len(s3.records("GET", key)) == reads
    assert s3.count("PUT", out_key) == 1 and s3.count("PUT", sum_key) == 1, s3.stats()["counts"]

    # A changed object (new ETag) runs again, replacing the output.
    text2 = "".join(json.dumps(r) + "\n" for r in rows[:3])
    put2 = c.put_object(Bucket=BUCKET, Key=key, Body=text2.encode())
    assert put2["ETag"] != put["ETag"]
    # Delivered 8 times at once (S3 and SNS retry): one job between them.
    event2 = s3_notification(s3, key, put2, len(text2))
    url = server.url + "/v1/events/s3"

    def deliver(_):
        session = requests.Session()
        session.trust_env = False
        with session:
            return session.post(url, params={"token": TOKEN}, data=json.dumps(event2), timeout=30)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(deliver, range(8)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert sum(a.json()["jobs_created"] for a in answers) == 1, [a.text for a in answers]

    def two():
        js = jobs_for(server, source, "batch one.jsonl")
        return js if len(js) == 2 and js[0]["status"] in DONE else None

    js = wait_until(two, 20, 0.1, lambda: "the second job: %s" % jobs(server))
    assert js[0]["status"] == "done" and js[0]["etag"].strip('"') == put2["ETag"].strip('"'), js
    check_output(read_jsonl_bytes(s3_get(c, out_key)), ref[:3], "batch one.jsonl v2")

    m = server.metrics()
    assert m.sum("pilotlight_trigger_objects_total", result="done") == 2, m.text
    assert m.sum("pilotlight_trigger_rows_total") == 21 + 3


def test_s3_sns_wrapped_notification_nested_key_and_edge_documents(s3, s3_trigger_server):
    server, prefix = s3_trigger_server
    c = s3.client()
    source = s3.uri(prefix + "/in")
    rows = digits_rows(12, 140)
    text = "id," + ",".join("p%d" % k for k in range(63)) + "\n" + \
        "".join(",".join(str(v) for v in r) + "\n" for r in rows)
    rel = "daily/2024-05-01/scan+more (v2).csv"  # '+', parentheses, spaces, sub-folders
    key = prefix + "/in/" + rel
    put = c.put_object(Bucket=BUCKET, Key=key, Body=text.encode())
    event = s3_notification(s3, key, put, len(text))
    assert event["Records"][0]["s3"]["object"]["key"].endswith("scan%2Bmore+%28v2%29.csv")

    # S3's one-off test message (no Records), then bad documents.
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2024-05-01T00:00:00.000Z",
                  "Bucket": BUCKET, "RequestId": "5582815E1AEA5ADF", "HostId": "8cLeGAmw098X5cv4Zkwcm"}
    assert assert_ok(post_notification(server, test_event)) == {"jobs_created": 0}
    assert assert_ok(post_notification(server, sns_wrap(test_event))) == {"jobs_created": 0}
    r = post_notification(server, None, raw="{not json")
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"], r.text
    r = server.get("/v1/events/s3", params={"token": TOKEN})
    assert r.status_code == 405, r.text
    # Records that are not ours: another bucket, another prefix, a removal, our own output names.
    other = json.loads(json.dumps(event))
    other["Records"][0]["s3"]["bucket"]["name"] = "elsewhere"
    assert assert_ok(post_notification(server, other)) == {"jobs_created": 0}
    other = json.loads(json.dumps(event))
    other["Records"][0]["s3"]["object"]["key"] = prefix + "/notin/x.csv"
    assert assert_ok(post_notification(server, other)) == {"jobs_created": 0}
    other = json.loads(json.dumps(event))
    other["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    assert assert_ok(post_notification(server, other)) == {"jobs_created": 0}
    for own in ("x.csv.out.jsonl", "x.csv.summary.json"):
        other = json.loads(json.dumps(event))
        other["Records"][0]["s3"]["object"]["key"] = quote_plus(prefix + "/in/" + own, safe="/")
        assert assert_ok(post_notification(server, other)) == {"jobs_created": 0}
    assert jobs(server) == []

    # The real one, through SNS.
    r = post_notification(server, sns_wrap(event))
    assert assert_ok(r, "SNS notification:") == {"jobs_created": 1}, r.text
    job = wait_jobs_final(server, source, [rel])[rel]
    assert job["status"] == "done", job
    lines = read_jsonl_bytes(s3_get(c, prefix + "/out/" + rel + ".out.jsonl"))
    check_output(lines, reference(server, rows), rel)
    check_summary(json.loads(s3_get(c, prefix + "/out/" + rel + ".summary.json")), rel, 12, 12, 0)
    assert s3.records("GET", key, status=(200, 206)), s3.stats()["counts"]
    # Redelivered directly (not through SNS): still the same object and ETag.
    assert assert_ok(post_notification(server, event)) == {"jobs_created": 0}


def test_s3_utf8_key(s3, s3_trigger_server):
    """Keys are UTF-8; S3 percent-encodes their bytes in the notification (é -> %C3%A9)."""
    server, prefix = s3_trigger_server
    c = s3.client()
    rel = "résumé données.jsonl"
    key = prefix + "/in/" + rel
    rows = digits_rows(3, 160)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    put = c.put_object(Bucket=BUCKET, Key=key, Body=text.encode())
    event = s3_notification(s3, key, put, len(text))
    assert "r%C3%A9sum%C3%A9+donn%C3%A9es.jsonl" in event["Records"][0]["s3"]["object"]["key"]
    assert assert_ok(post_notification(server, event)) == {"jobs_created": 1}
    job = wait_jobs_final(server, s3.uri(prefix + "/in"), [rel])[rel]
    assert job["status"] == "done", job
    check_output(read_jsonl_bytes(s3_get(c, prefix + "/out/" + rel + ".out.jsonl")),
                 reference(server, rows), rel)


def test_s3_notifications_without_triggers_are_404(start_server):
    server = start_server()
    r = server.post("/v1/events/s3", params={"token": TOKEN}, data=json.dumps({"Records": []}))
    assert_error(r, 404, "not_found")
    assert assert_ok(server.get("/v1/jobs")) == {"jobs": []}


# --------------------------------------------------------------------------------------------
# 3. Objects that cannot be read as a whole: the job fails (dead letter), no output
# --------------------------------------------------------------------------------------------
def test_unparseable_objects_fail_with_an_error_and_no_output(start_server, tmp_path):
    import numpy as np

    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    outbox.mkdir()
    src = file_uri(inbox)
    server = start_server(config_text({"triggers": [
        {"source": src, "function": "digits", "output": file_uri(outbox), "batch_size": 16}]}))
    good = npy_bytes(np.asarray(digits_rows(10, 300), dtype=np.float32))
    header_end = good.index(b"\n") + 1
    bad = {
        "corrupt.npy": os.urandom(64) + b"not numpy at all",
        "truncated.npy": good[:header_end + 64 * 4 * 3 + 10],  # 3.x rows of 10
        "bigendian.npy": npy_bytes(np.asarray(digits_rows(2, 300), dtype=">f4")),
        "fortran.npy": npy_bytes(np.asfortranarray(np.asarray(digits_rows(3, 300), dtype=np.float32))),
        "cube.npy": npy_bytes(np.zeros((2, 2, 2), dtype=np.float32)),
    }
    for name, data in bad.items():
        write_atomically(inbox / name, data)
    write_atomically(inbox / "good.npy", good)
    final = wait_jobs_final(server, src, list(bad) + ["good.npy"])
    assert final["good.npy"]["status"] == "done", final["good.npy"]
    for name in bad:
        j = final[name]
        assert j["status"] == "failed", j
        assert isinstance(j["error"], str) and j["error"], j
    assert "magic" in final["corrupt.npy"]["error"], final["corrupt.npy"]
    assert "truncated" in final["truncated.npy"]["error"], final["truncated.npy"]
    assert ">f4" in final["bigendian.npy"]["error"], final["bigendian.npy"]
    assert "Fortran" in final["fortran.npy"]["error"], final["fortran.npy"]
    assert "1-D or 2-D" in final["cube.npy"]["error"], final["cube.npy"]
    assert out_files(outbox) == ["good.npy.out.jsonl", "good.npy.summary.json"], list(outbox.iterdir())
    m = server.metrics()
    assert m.sum("pilotlight_trigger_objects_total", result="failed") == len(bad), m.text
    assert m.sum("pilotlight_trigger_objects_total", result="done") == 1, m.text
    # The scratch copies and partial outputs of failed jobs are not left behind.
    left = sorted(p.name for p in (server.state_dir / "jobs").iterdir())
    assert left == [], left


# --------------------------------------------------------------------------------------------
# 4. SIGKILL half-way through a 10,000-row object
# --------------------------------------------------------------------------------------------
HANDLER = '''
import json, os, time

def slowecho(event, context):
    """One batch: log the row ids it was given, sleep SLOW_MS, answer [2*id, a+b] per row."""
    rows = event["inputs"]
    fd = os.open(os.environ["CALL_LOG"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (json.dumps([r[0] for r in rows]) + "\\n").encode())
    finally:
        os.close(fd)
    time.sleep(float(os.environ["SLOW_MS"]) / 1000.0)
    return {"outputs": [[2 * r[0], r[1] + r[2]] for r in rows]}
'''

N_ROWS = 10_000
CRASH_BATCH = 50


def test_sigkill_mid_object_resumes_and_publishes_every_row_exactly_once(start_server, tmp_path):
    hdir = tmp_path / "handler"
    hdir.mkdir()
    (hdir / "trigger_handlers.py").write_text(HANDLER)
    inbox, outbox, state = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "state"
    inbox.mkdir()
    outbox.mkdir()
    calls = tmp_path / "calls.jsonl"
    src = file_uri(inbox)
    cfg = config_text({
        "functions": {"slowecho": {
            "runtime": "process", "command": BOOTSTRAP, "handler": "trigger_handlers.slowecho",
            "cwd": str(hdir), "timeout": "30s", "max_instances": 1,
            "env": {"SLOW_MS": "20", "CALL_LOG": str(calls)}}},
        "triggers": [{"source": src, "function": "slowecho", "output": file_uri(outbox),
                      "batch_size": CRASH_BATCH}],
    })
    server = start_server(cfg, state_dir=state)
    text = "id,a,b\n" + "".join("%d,%d,%d\n" % (i, i % 7, i % 13) for i in range(N_ROWS))
    write_atomically(inbox / "big.csv", text)

    seen = {}

    def kill_between(srv, lo, hi, sig=signal.SIGKILL):
        """Signals `srv` once GET /v1/jobs shows rows_done in [lo, hi] of the object and waits
        for it to exit (SIGKILL: any status; SIGTERM: it must drain and exit 0 within 20 s)."""
        def check():
            js = jobs_for(srv, src, "big.csv")
            if js and js[0]["status"] == "running":
                seen["running"] = js[0]  # the last one seen: rows_done > 0, the object parsed
                if lo * N_ROWS <= js[0]["rows_done"] <= hi * N_ROWS:
                    return js[0]
            if js and js[0]["status"] in DONE:
                raise AssertionError("the job finished before it could be killed: %s" % js[0])
            return None

        job = wait_until(check, 60, 0.02, lambda: "rows_done in [%d%%, %d%%]: %s" % (
            lo * 100, hi * 100, jobs(srv)))
        srv.signal(sig)
        rc = srv.wait_exit(20)
        if sig == signal.SIGKILL:
            srv.expect_exit = None
        else:
            assert rc == 0, "exit status %r after SIGTERM in the middle of an object\n%s" % (
                rc, srv.diagnostics(3000))
        assert not (outbox / "big.csv.out.jsonl").exists(), "output published before the object was done"
        return job

    # SIGKILL about a third of the way; after resuming, a graceful stop (SIGTERM) past half-way.
    first_kill = kill_between(server, 0.25, 0.45)
    server2 = start_server(cfg, state_dir=state)
    second_kill = kill_between(server2, 0.55, 0.8, signal.SIGTERM)
    assert second_kill["id"] == first_kill["id"], (first_kill, second_kill)
    server3 = start_server(cfg, state_dir=state)
    job = wait_jobs_final(server3, src, ["big.csv"], timeout=60)["big.csv"]
    assert job["status"] == "done", job
    js = jobs_for(server3, src)
    assert len(js) == 1, js
    assert (job["rows"], job["rows_done"], job["ok"], job["errors"]) == (N_ROWS, N_ROWS, N_ROWS, 0), job

    # The published output: every row exactly once, in order, with the right outputs.
    raw = (outbox / "big.csv.out.jsonl").read_bytes()
    lines = read_jsonl_bytes(raw)
    assert len(lines) == N_ROWS, len(lines)
    rows = [l["row"] for l in lines]
    assert rows == list(range(N_ROWS)), "duplicate/missing/out-of-order rows: first bad at %s" % next(
        (i for i, r in enumerate(rows) if r != i), None)
    bad = [l for l in lines if l.get("outputs") != [2 * l["row"], l["row"] % 7 + l["row"] % 13]]
    assert not bad, bad[:5]
    check_summary(json.loads((outbox / "big.csv.summary.json").read_text()), "big.csv", N_ROWS, N_ROWS, 0,
                  function="slowecho", version=None)

    # Each restart resumed from the checkpoint: the server started at (or after) the rows done
    # at the stop, and no more than the one batch in flight at each stop ran twice.
    for srv, kill in ((server2, first_kill), (server3, second_kill)):
        resumed = srv.wait_log_record(lambda r: r.get("msg") == "trigger: processing", 5,
                                      "the resume log line")
        assert kill["rows_done"] <= resumed.get("resume_at_row", -1) <= kill["rows_done"] + 2 * CRASH_BATCH, (
            resumed, kill)
    counts = {}
    for line in calls.read_text().splitlines():
        for i in json.loads(line):
            counts[i] = counts.get(i, 0) + 1
    assert sorted(counts) == list(range(N_ROWS)), "rows never run: %d" % (N_ROWS - len(counts))
    twice = sorted(i for i, n in counts.items() if n > 1)
    assert len(twice) <= 2 * CRASH_BATCH, "%d rows ran more than once: %s..." % (len(twice), twice[:20])
    # Nothing left in the scratch folder; the inbox is untouched.
    assert sorted(p.name for p in (state / "jobs").iterdir()) == []
    assert (inbox / "big.csv").read_bytes() == text.encode()
    assert metric(server3, "pilotlight_trigger_objects_total", result="done") == 1
    # Progress reporting while it ran: the object's row count was known (rows_done of rows).
    assert seen["running"]["rows"] == N_ROWS, (
        "GET /v1/jobs reported a running job with rows=%r (rows_done=%r): the row count is only "
        "recorded when the job finishes" % (seen["running"]["rows"], seen["running"]["rows_done"]))


# --------------------------------------------------------------------------------------------
# 5. Config errors
# --------------------------------------------------------------------------------------------
GOOD_TRIGGER = {"source": "file:///tmp/pl-inbox", "function": "digits", "output": "file:///tmp/pl-outbox"}


def _without(key):
    t = dict(GOOD_TRIGGER)
    del t[key]
    return t


BAD_TRIGGERS = {
    "missing_source": ({"triggers": [_without("source")]}, ["triggers[0].source"]),
    "missing_function": ({"triggers": [_without("function")]}, ["triggers[0].function"]),
    "missing_output": ({"triggers": [_without("output")]}, ["triggers[0].output"]),
    "bad_source_scheme": ({"triggers": [GOOD_TRIGGER, dict(GOOD_TRIGGER, source="http://example.com/in")]},
                          ["triggers[1]", "http://example.com/in"]),
    "bad_output_scheme": ({"triggers": [dict(GOOD_TRIGGER, output="/tmp/plain/path")]},
                          ["triggers[0]", "/tmp/plain/path"]),
    "unknown_function": ({"functions": {"digits": {}},
                          "triggers": [GOOD_TRIGGER, dict(GOOD_TRIGGER, function="nope")]},
                         ["triggers[1].function", "nope"]),
    "unknown_key": ({"triggers": [dict(GOOD_TRIGGER, batchsize=10)]}, ["triggers[0]", "batchsize"]),
    "zero_batch_size": ({"triggers": [dict(GOOD_TRIGGER, batch_size=0)]}, ["triggers[0].batch_size"]),
    "not_a_list": ({"triggers": GOOD_TRIGGER}, ["triggers"]),
}


@pytest.mark.parametrize("case", sorted(BAD_TRIGGERS))
def test_bad_trigger_config_is_refused_naming_the_trigger(tmp_path, store, pilotlight_bin, case):
    cfg, needles = BAD_TRIGGERS[case]
    path = tmp_path / "pilotlight.yaml"
    path.write_text(config_text(cfg) + "\n")
    argv = [str(BIN), "serve", "--config", str(path), "--store", store.uri, "--state-dir",
            str(tmp_path / "state"), "--listen", "127.0.0.1:%d" % free_port()]
    try:
        p = subprocess.run(argv, cwd=str(tmp_path), capture_output=True, text=True, errors="replace",
                           timeout=20, stdin=subprocess.DEVNULL, env=CHILD_ENV)
    except subprocess.TimeoutExpired:  # subprocess.run has killed it (by PID)
        raise AssertionError("pilotlight serve accepted a bad trigger config and kept running:\n%s"
                             % config_text(cfg))
    assert p.returncode != 0, "config accepted:\n%s\n%s" % (config_text(cfg), cli_output(p))
    out = p.stdout + p.stderr
    for n in needles:
        assert n in out, "message does not name %r:\n%s" % (n, cli_output(p))
    assert "pilotlight.yaml" in out, cli_output(p)


# --------------------------------------------------------------------------------------------
# 6. A busy function delays an object; it does not fail it
# --------------------------------------------------------------------------------------------
def test_a_throttled_batch_waits_for_capacity_instead_of_failing_the_object(start_server, tmp_path):
    """Synchronous traffic holds the only instance, so the trigger's batch is refused (429:
    no free instance within queue_timeout). That is not the object's fault and not a bad row:
    the object must still complete (as an async event waits and retries when throttled)."""
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    outbox.mkdir()
    src = file_uri(inbox)
    server = start_server(config_text({
        "functions": {"sleep": {"max_instances": 1, "min_instances": 1, "concurrency": 1,
                                "queue_timeout": "200ms"}},
        "triggers": [{"source": src, "function": "sleep", "output": file_uri(outbox), "batch_size": 4}]}))
    server.wait_state("sleep", "warm", timeout=30)
    busy_iterations = SleepCalibration(server).iterations(2.0)
    out = {}
    sync = threading.Thread(target=lambda: out.setdefault("r", server.invoke("sleep", sleep_body(busy_iterations))))
    sync.start()
    try:
        time.sleep(0.3)
        write_atomically(inbox / "ones.jsonl", "[1.0]\n" * 10)
        job = wait_jobs_final(server, src, ["ones.jsonl"], timeout=20)["ones.jsonl"]
    finally:
        sync.join()
    assert_ok(out["r"], "the synchronous request:")
    assert job["status"] == "done", (
        "the object was failed (dead-lettered) because the function was busy with synchronous "
        "requests when its batch arrived: %r" % job)
    lines = read_jsonl_bytes((outbox / "ones.jsonl.out.jsonl").read_bytes())
    assert [l["row"] for l in lines] == list(range(10)) and all(l["outputs"] == [2.0] for l in lines), lines


def test_a_model_that_cannot_load_fails_the_object_not_each_row(start_server, store_copy, tmp_path):
    """A failure that is not about the input (the model's file fails its sha256 check) fails the
    whole object with that error: no output with 10 identical per-row errors."""
    model = store_copy.version_dir("digits", "1.0.0") / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    outbox.mkdir()
    src = file_uri(inbox)
    server = start_server(config_text({"triggers": [
        {"source": src, "function": "digits", "output": file_uri(outbox), "batch_size": 4}]}),
        store=store_copy.uri)
    write_atomically(inbox / "x.jsonl", "".join(json.dumps(r) + "\n" for r in digits_rows(10)))
    job = wait_jobs_final(server, src, ["x.jsonl"])["x.jsonl"]
    assert job["status"] == "failed", job
    assert "sha256" in job["error"] or "checksum" in job["error"], job
    assert out_files(outbox) == [], list(outbox.iterdir())
    assert metric(server, "pilotlight_trigger_objects_total", result="failed") == 1


def test_s3_trigger_without_a_token_is_refused_at_start(start_server, tmp_path):
    """S3 notifications must be authenticated: an s3:// source needs a token."""
    cfg = ("functions:\n  digits: {}\ntriggers:\n  - {source: s3://models/in, function: digits, output: file://%s}\n"
           % tmp_path)
    srv = start_server(config=cfg, wait=False, expect_exit=None)
    assert srv.proc.wait(timeout=30) != 0
    text = srv.stderr_text() + srv.log_text()
    assert "triggers[0].token" in text and "required" in text, text[-2000:]
