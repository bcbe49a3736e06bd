"""http(s) sources for single artifacts: `model push` from a presigned URL (the S3 test server
verifies the presigned signature), and a manifest file entry with a "url" (a plain web server)
that is fetched and verified like a store file — a wrong hash is refused."""
import functools
import hashlib
import http.server
import json
import shutil
import threading

import pytest

import s3support
from support import CHILD_ENV, cli_output, digits_rows, run_cli, store_uri


@pytest.fixture
def web(tmp_path):
    """A plain HTTP file server on loopback: (folder, base URL, list of requested paths)."""
    root = tmp_path / "www"
    root.mkdir()
    seen = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append(self.path)
            super().do_GET()

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield root, "http://127.0.0.1:%d" % srv.server_port, seen
    srv.shutdown()
    srv.server_close()


def test_push_from_a_presigned_url_copies_and_verifies_the_artifact(s3, tmp_path, models_dir):
    s3.reset()
    c = s3.client()
    data = (models_dir / "tiny_mlp.onnx").read_bytes()
    c.put_object(Bucket=s3.bucket, Key="incoming/tiny.onnx", Body=data)
    url = c.generate_presigned_url("get_object", Params={"Bucket": s3.bucket, "Key": "incoming/tiny.onnx"},
                                   ExpiresIn=300)
    store = tmp_path / "store"
    p = run_cli("model", "push", url, "-n", "tiny", "-v", "1", "--promote", "--store", store_uri(store))
    assert p.returncode == 0, cli_output(p)
    manifest = json.loads((store / "tiny" / "versions" / "1" / "manifest.json").read_text())
    assert manifest["files"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert (store / "tiny" / "versions" / "1" / "model.onnx").read_bytes() == data
    assert s3.count("GET", "incoming/tiny.onnx", 200, auth="presigned") == 1
    assert "X-Amz-Signature" not in p.stdout + p.stderr, "a presigned URL (a credential) was printed"


def test_push_from_a_url_that_is_missing_fails_naming_it(web, tmp_path):
    _, base, _ = web
    p = run_cli("model", "push", base + "/nope.onnx", "-n", "x", "-v", "1", "--store", store_uri(tmp_path / "s"))
    assert p.returncode != 0, cli_output(p)
    assert "nope.onnx" in p.stderr and "does not exist" in p.stderr, cli_output(p)
    assert not (tmp_path / "s" / "x").exists()


def test_manifest_url_is_fetched_from_the_web_server_verified_and_cached(s3, web, start_server, models_dir):
    s3.reset()
    root, base, seen = web
    shutil.copy(models_dir / "digits.onnx", root / "digits.onnx")
    shutil.copy(models_dir / "tiny_mlp.onnx", root / "imposter.onnx")
    c = s3.client()
    s3support.upload_version(c, s3.bucket, "urlsrc", "digits", "1", models_dir / "digits.onnx",
                             url=base + "/digits.onnx", upload_model=False)
    s3support.promote(c, s3.bucket, "urlsrc", "digits", "1")
    # A manifest promising digits.onnx's hash at a URL that serves other bytes.
    s3support.upload_version(c, s3.bucket, "urlsrc", "bad", "1", models_dir / "digits.onnx",
                             url=base + "/imposter.onnx", upload_model=False)
    s3support.promote(c, s3.bucket, "urlsrc", "bad", "1")

    srv = start_server(store=s3.uri("urlsrc"), env=s3.env(CHILD_ENV))
    cache = srv.state_dir / "cache"
    # First the bad one (content-addressed: once digits' bytes are cached, any manifest that
    # promises their hash is served from the cache without fetching its URL at all).
    r = srv.session.post(srv.url + "/v1/functions/bad/invoke", json={"inputs": digits_rows(1)}, timeout=60)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["type"] == "model_integrity"
    assert "sha256 mismatch" in r.json()["error"]["message"]
    assert seen.count("/imposter.onnx") >= 1
    assert [f.name for f in cache.iterdir() if f.is_file()] == [], "refused bytes were kept in the cache"

    r = srv.session.post(srv.url + "/v1/functions/digits/invoke", json={"inputs": digits_rows(2)}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == "1"
    assert seen.count("/digits.onnx") == 1
    assert s3.count("GET", "urlsrc/digits/versions/1/model.onnx") == 0, "fetched from the store, not the URL"
    sha = hashlib.sha256((models_dir / "digits.onnx").read_bytes()).hexdigest()
    assert (cache / sha).is_file()
    assert json.loads((cache / (sha + ".json")).read_text())["source"] == base + "/digits.onnx"
