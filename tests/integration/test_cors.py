"""CORS as a browser page relies on it: server.cors for the shared routes (/v1/infer,
/v1/batch, /v2/...), functions.X.cors for /v1/functions/X/..., preflights (OPTIONS with Origin +
Access-Control-Request-Method [+ -Headers]) answered 204 or 403 cors_forbidden, the CORS
headers on ordinary answers from an allowed origin (and only then), credentials, "*" and the
config check that refuses "*" with credentials."""

import subprocess

import pytest

import support
from support import assert_error, assert_ok, tiny_rows

APP = "https://app.example"        # server.cors
FN = "https://fn.example"          # functions.tiny_mlp.cors
CRED = "https://cred.example"      # functions.digits.cors (credentials)
EVIL = "https://evil.example"      # nobody's

FUNCTIONS = {"idle_timeout": "600s", "min_instances": 1}
CONFIG = {
    "server": {"cors": {"origins": [APP, "http://localhost:3000"], "methods": ["GET", "POST"],
                        "headers": ["content-type", "x-model"], "expose_headers": ["X-Cold-Start"],
                        "max_age": "120s"}},
    "functions": {
        "tiny_mlp": dict(FUNCTIONS, cors={"origins": [FN], "methods": ["POST"],
                                          "headers": ["Content-Type", "X-Trace"],
                                          "max_age": "30s"}),
        "digits": dict(FUNCTIONS, cors={"origins": [CRED], "allow_credentials": True}),
        "multi_input": dict(FUNCTIONS, cors={"origins": ["*"]}),
        "all_dtypes": dict(FUNCTIONS),  # no cors of its own
    },
}

TINY = {"inputs": tiny_rows(1)}
SHARED_POSTS = [
    ("/v1/infer?model=tiny_mlp", TINY),
    ("/v1/batch?model=tiny_mlp", [TINY, TINY]),
    ("/v2/models/tiny_mlp/infer",
     {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": tiny_rows(1)[0]}]}),
]


@pytest.fixture(scope="module")
def cors(shared_server):
    s = shared_server.get()
    s.warm_all()
    return s


def preflight(server, path, origin, method="POST", headers=None):
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        h["Access-Control-Request-Headers"] = headers
    return server.request("OPTIONS", path, headers=h)


def split(v):
    return [x.strip().lower() for x in (v or "").split(",") if x.strip()]


def assert_preflight_ok(r, origin, method, headers=(), max_age=None, credentials=False, star=False):
    assert r.status_code == 204, "preflight expected 204, got %d %r: %s" % (r.status_code, dict(r.headers), r.text[:500])
    assert r.content == b"", r.content[:200]
    h = r.headers
    assert h.get("Access-Control-Allow-Origin") == ("*" if star else origin), dict(h)
    assert method.lower() in split(h.get("Access-Control-Allow-Methods")), dict(h)
    allowed = split(h.get("Access-Control-Allow-Headers"))
    for x in headers:
        assert x.lower() in allowed, "%s not in Access-Control-Allow-Headers %r" % (x, allowed)
    assert (h.get("Access-Control-Max-Age") or "").isdigit(), dict(h)
    if max_age is not None:
        assert h["Access-Control-Max-Age"] == str(max_age), dict(h)
    assert "origin" in split(h.get("Vary")), "no Vary: Origin: %r" % dict(h)
    if credentials:
        assert h.get("Access-Control-Allow-Credentials") == "true", dict(h)
    else:
        assert "Access-Control-Allow-Credentials" not in h, dict(h)


def assert_forbidden(r, *needles):
    err = assert_cors_error(r)
    for n in needles:
        assert n.lower() in err["message"].lower(), "message %r does not mention %r" % (err["message"], n)


def assert_cors_error(r):
    """403 cors_forbidden without any Allow-* header. Paths under /v2 answer errors in the v2
    shape ({"error": "message"}), the others in the typed shape."""
    assert "Access-Control-Allow-Origin" not in r.headers, "a refused preflight allows the origin: %r" % dict(r.headers)
    assert "Access-Control-Allow-Methods" not in r.headers, dict(r.headers)
    if r.url.split("127.0.0.1", 1)[-1].split("/", 1)[-1].startswith("v2"):
        assert r.status_code == 403, "expected 403, got %d: %s" % (r.status_code, r.text[:500])
        doc = r.json()
        assert isinstance(doc.get("error"), str) and doc["error"], doc
        return {"message": doc["error"]}
    return assert_error(r, 403, "cors_forbidden")


def assert_cors_headers(r, origin, star=False, credentials=False):
    h = r.headers
    assert h.get("Access-Control-Allow-Origin") == ("*" if star else origin), (
        "expected Allow-Origin %r, got %r" % ("*" if star else origin, dict(h)))
    expose = split(h.get("Access-Control-Expose-Headers"))
    assert "x-request-id" in expose, "X-Request-Id not exposed: %r" % dict(h)
    assert "origin" in split(h.get("Vary")), dict(h)
    if credentials:
        assert h.get("Access-Control-Allow-Credentials") == "true", dict(h)
    else:
        assert "Access-Control-Allow-Credentials" not in h, dict(h)
    return expose


def assert_no_cors_headers(r):
    leaked = [k for k in r.headers if k.lower().startswith("access-control-")]
    assert not leaked, "CORS headers on an answer to another origin: %r" % dict(r.headers)


# --------------------------------------------------------------------------------------
# Preflights: shared routes (server.cors)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/v1/infer", "/v1/batch", "/v2/models/tiny_mlp/infer",
                                  "/v2/models/tiny_mlp/versions/1.0.0/infer"])
def test_shared_preflight_from_allowed_origin(cors, path):
    r = preflight(cors, path, APP, "POST", "Content-Type, X-Model")
    assert_preflight_ok(r, APP, "POST", ["content-type", "x-model"], max_age=120)


def test_shared_preflight_second_listed_origin_and_get(cors):
    r = preflight(cors, "/v2/models/tiny_mlp", "http://localhost:3000", "GET")
    assert_preflight_ok(r, "http://localhost:3000", "GET", max_age=120)


def test_preflight_without_request_headers(cors):
    assert_preflight_ok(preflight(cors, "/v1/infer", APP, "POST"), APP, "POST")


@pytest.mark.parametrize("path", ["/v1/infer", "/v1/batch", "/v2/models/tiny_mlp/infer"])
def test_shared_preflight_disallowed_origin(cors, path):
    assert_forbidden(preflight(cors, path, EVIL, "POST", "content-type"), EVIL)


@pytest.mark.parametrize("origin", [APP + "/", "http://app.example", APP + ":443x", "https://sub.app.example", "null"])
def test_origin_must_match_exactly(cors, origin):
    assert_cors_error(preflight(cors, "/v1/infer", origin, "POST"))


def test_shared_preflight_disallowed_method(cors):
    assert_forbidden(preflight(cors, "/v1/infer", APP, "DELETE"), "DELETE")


def test_shared_preflight_disallowed_header(cors):
    assert_forbidden(preflight(cors, "/v1/infer", APP, "POST", "content-type, X-Secret"), "x-secret")


# --------------------------------------------------------------------------------------
# Preflights: a function's own cors
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/v1/functions/tiny_mlp/invoke", "/v1/functions/tiny_mlp/invoke-async"])
def test_function_preflight_from_allowed_origin(cors, path):
    r = preflight(cors, path, FN, "POST", "content-type,x-trace")
    assert_preflight_ok(r, FN, "POST", ["content-type", "x-trace"], max_age=30)


def test_function_preflight_disallowed(cors):
    assert_forbidden(preflight(cors, "/v1/functions/tiny_mlp/invoke", EVIL, "POST"), EVIL)
    assert_forbidden(preflight(cors, "/v1/functions/tiny_mlp/invoke", FN, "GET"), "GET")
    assert_forbidden(preflight(cors, "/v1/functions/tiny_mlp/invoke", FN, "POST", "x-model"), "x-model")


def test_function_cors_does_not_apply_to_another_function(cors):
    # tiny_mlp's origin on a function without cors, and on one with other origins
    assert_cors_error(preflight(cors, "/v1/functions/all_dtypes/invoke", FN, "POST"))
    assert_cors_error(preflight(cors, "/v1/functions/digits/invoke", FN, "POST"))
    # nor to the shared routes, even when they route to that function
    assert_cors_error(preflight(cors, "/v1/infer", FN, "POST"))
    # and server.cors does not open a function's own routes
    assert_cors_error(preflight(cors, "/v1/functions/tiny_mlp/invoke", APP, "POST"))
    assert_cors_error(preflight(cors, "/v1/functions/all_dtypes/invoke", APP, "POST"))
    r = cors.post("/v1/functions/all_dtypes/invoke", headers={"Origin": FN},
                  json={"inputs": dict({n: [[1, 0]] for n in ("f32", "f64", "i32", "i64", "u8", "i8")},
                                    b=[[True, False]])})
    assert_ok(r)
    assert_no_cors_headers(r)


# --------------------------------------------------------------------------------------
# Ordinary requests
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("path,body", SHARED_POSTS, ids=["infer", "batch", "v2"])
def test_shared_request_from_allowed_origin_gets_cors_headers(cors, path, body):
    r = cors.post(path, json=body, headers={"Origin": APP})
    assert r.status_code == 200, r.text[:500]
    expose = assert_cors_headers(r, APP)
    assert "x-cold-start" in expose, "expose_headers not exposed: %r" % expose


@pytest.mark.parametrize("path,body", SHARED_POSTS, ids=["infer", "batch", "v2"])
def test_shared_request_from_other_origin_gets_none(cors, path, body):
    r = cors.post(path, json=body, headers={"Origin": EVIL})
    assert r.status_code == 200, r.text[:500]
    assert_no_cors_headers(r)
    r = cors.post(path, json=body)  # no Origin at all (not a browser)
    assert r.status_code == 200, r.text[:500]
    assert_no_cors_headers(r)


def test_error_answers_carry_cors_headers_for_allowed_origin(cors):
    """A page must be able to read an error's body too."""
    r = cors.post("/v1/infer?model=tiny_mlp", data=b"{not json", headers={"Origin": APP,
                                                                      "Content-Type": "application/json"})
    assert_error(r, 400, "invalid_json")
    assert_cors_headers(r, APP)


def test_function_request_from_allowed_origin(cors):
    r = cors.invoke("tiny_mlp", TINY, headers={"Origin": FN})
    assert_ok(r)
    assert_cors_headers(r, FN)
    r = cors.invoke("tiny_mlp", TINY, headers={"Origin": APP})  # the shared routes' origin
    assert_ok(r)
    assert_no_cors_headers(r)


# --------------------------------------------------------------------------------------
# Credentials and "*"
# --------------------------------------------------------------------------------------
def test_credentials_echo_the_origin(cors):
    r = preflight(cors, "/v1/functions/digits/invoke", CRED, "POST", "content-type")
    assert_preflight_ok(r, CRED, "POST", ["content-type"], credentials=True)
    assert r.headers["Access-Control-Allow-Origin"] != "*"
    r = cors.invoke("digits", {"inputs": support.digits_rows(1)}, headers={"Origin": CRED})
    assert_ok(r)
    assert_cors_headers(r, CRED, credentials=True)
    r = cors.invoke("digits", {"inputs": support.digits_rows(1)}, headers={"Origin": EVIL})
    assert_ok(r)
    assert_no_cors_headers(r)


def test_function_cors_defaults(cors):
    """A cors block with origins only: methods GET, POST; headers content-type; max_age 10 min."""
    r = preflight(cors, "/v1/functions/digits/invoke", CRED, "POST", "content-type")
    assert_preflight_ok(r, CRED, "POST", ["content-type"], max_age=600, credentials=True)
    assert_cors_error(preflight(cors, "/v1/functions/digits/invoke", CRED, "PUT"))
    assert_cors_error(preflight(cors, "/v1/functions/digits/invoke", CRED, "POST", "authorization"))


@pytest.mark.parametrize("origin", [EVIL, APP, "http://localhost:8000"])
def test_star_answers_star(cors, origin):
    r = preflight(cors, "/v1/functions/multi_input/invoke", origin, "POST", "content-type")
    assert_preflight_ok(r, origin, "POST", ["content-type"], star=True)
    body = {"inputs": {"features": [[1.0, 2.0, 3.0, 4.0]], "ids": [[1, 2]]}}
    r = cors.invoke("multi_input", body, headers={"Origin": origin})
    assert_ok(r)
    assert_cors_headers(r, origin, star=True)


def test_options_without_preflight_headers_is_not_a_preflight(cors):
    r = cors.request("OPTIONS", "/v1/infer", headers={"Origin": APP})
    assert r.status_code == 405, r.text[:300]
    assert "POST" in r.headers.get("Allow", ""), dict(r.headers)


# --------------------------------------------------------------------------------------
# The configuration check
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["server", "function"])
def test_star_with_credentials_is_refused_at_startup(tmp_path, store, pilotlight_bin, where):
    bad = {"origins": ["*"], "allow_credentials": True}
    if where == "server":
        config = {"server": {"cors": bad}, "functions": {"tiny_mlp": {}}}
        key = "server.cors"
    else:
        config = {"functions": {"tiny_mlp": {"cors": bad}}}
        key = "functions.tiny_mlp.cors"
    cfg = tmp_path / "pilotlight.yaml"
    cfg.write_text(support.to_yaml(config) + "\n", encoding="utf-8")
    argv = [str(support.BIN), "serve", "--config", str(cfg), "--store", store.uri,
            "--listen", "127.0.0.1:%d" % support.free_port(), "--state-dir", str(tmp_path / "state")]
    try:
        p = subprocess.run(argv, cwd=str(tmp_path), capture_output=True, text=True, errors="replace",
                           timeout=20, stdin=subprocess.DEVNULL, env=support.CHILD_ENV)
    except subprocess.TimeoutExpired:
        raise AssertionError("pilotlight serve accepted origins: ['*'] with allow_credentials: true "
                             "and kept running") from None
    out = p.stdout + p.stderr
    assert p.returncode > 0, "expected a non-zero exit, got %s\n%s" % (p.returncode, out)
    assert key in out and "allow_credentials" in out, "the message does not name %s and " \
        "allow_credentials:\n%s" % (key, out)
