"""Authentication and usage plans as a user relies on them (the hostile files cover forged
input): API keys made with `pilotlight keys create|list|revoke` against a RUNNING server and
through the admin keys API, X-Api-Key and Authorization: Bearer, per-function key restrictions
and functions.X.plans, the key store holding only hashes, usage plans (rate/burst and daily
quota) and function rate limits with Retry-After and RateLimit-* headers, JWTs (RS256, ES256,
HS256) on a function's own routes and on the shared routes, auth.default, and the admin API
(the token, 401/403, the CLI sending PILOTLIGHT_ADMIN_TOKEN).

One module server (`state_dir: ./state` in its config, started in its working folder, so
`pilotlight keys ... -c pilotlight.yaml` run there uses the server's key store). Every function
serves tiny_mlp under another name, each with its own auth.
"""

import base64
import calendar
import json
import os
import secrets
import shutil
import sqlite3
import time

import pytest

try:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
except ImportError as e:  # a collection error, not a silent skip
    raise ImportError("%s: install PyJWT and cryptography (apt-get install -y python3-jwt "
                      "python3-cryptography; tools/setup.sh does)" % e) from None

import support
from support import assert_error, assert_ok, run_cli, cli_output, tiny_rows

ISSUER = "https://issuer.example"
AUDIENCE = "pilotlight-tests"
ADMIN_REALM = 'Bearer realm="pilotlight-admin"'
TINY = {"inputs": tiny_rows(1)}
NO_AUTH = {"Authorization": None}  # drop the session's admin token

FN = {"idle_timeout": "600s", "min_instances": 1}


def fn(**kw):
    d = dict(FN, model="tiny_mlp")
    d.update(kw)
    return d


def make_config(jwks_path):
    return {
        "state_dir": "./state",
        "auth": {
            "default": "api_key",
            "jwt": {"jwks": "file://" + str(jwks_path), "issuer": ISSUER, "audience": AUDIENCE},
        },
        "usage_plans": {
            "basic": {"rate": 1000, "burst": 1000},
            "pro": {"rate": 1000, "burst": 1000},
            "slow": {"rate": 2, "burst": 3},
            "daily": {"rate": 1000, "burst": 1000, "quota_per_day": 5},
        },
        "functions": {
            "tiny_mlp": dict(FN, auth="api_key"),
            "k_other": fn(auth="api_key"),
            "k_pro": fn(auth="api_key", plans=["pro"]),
            "k_default": fn(),                       # auth.default: api_key
            "t_jwt": fn(auth="jwt"),
            "t_open": fn(auth="none"),
            "t_limited": fn(auth="none", rate_limit={"rate": 1, "burst": 3}),
        },
    }


# --------------------------------------------------------------------------------------
# JWT keys
# --------------------------------------------------------------------------------------
def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Signers:
    def __init__(self):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.hs = secrets.token_bytes(32)  # the minimum an oct key may have
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key()))
        rsa_jwk.update({"kid": "rsa-1", "alg": "RS256", "use": "sig"})
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key()))
        ec_jwk.update({"kid": "ec-1", "alg": "ES256", "use": "sig"})
        oct_jwk = {"kty": "oct", "kid": "hs-1", "alg": "HS256", "k": b64url(self.hs)}
        self.jwks = {"keys": [rsa_jwk, ec_jwk, oct_jwk]}

    def token(self, alg, **claims):
        now = int(time.time())
        c = {"sub": "user-" + alg.lower(), "iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now - 5,
             "exp": now + 600}
        c.update(claims)
        key, kid = {"RS256": (self.rsa, "rsa-1"), "ES256": (self.ec, "ec-1"),
                    "HS256": (self.hs, "hs-1")}[alg]
        return jwt.encode(c, key, algorithm=alg, headers={"kid": kid})


@pytest.fixture(scope="module")
def signers():
    return Signers()


@pytest.fixture(scope="module")
def auth_server(module_servers, store, tmp_path_factory, signers):
    d = tmp_path_factory.mktemp("auth_module")
    jwks = d / "jwks.json"
    jwks.write_text(json.dumps(signers.jwks), encoding="utf-8")
    # a private store: `model promote --server` writes current.json
    copy = d / "store" / "models"
    shutil.copytree(store.path, copy)
    return module_servers.shared(make_config(jwks), store=support.store_uri(copy), state_dir=False)


@pytest.fixture
def server(auth_server):
    s = auth_server.get()
    return s


@pytest.fixture(scope="module", autouse=True)
def _warm(auth_server):
    auth_server.get().warm_all()


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------
def call(server, function, key=None, bearer=None, path=None, body=None, **kw):
    """POST to a function (or `path`) with exactly the credentials given (never the admin token)."""
    headers = dict(NO_AUTH)
    if key is not None:
        headers["X-Api-Key"] = key
    if bearer is not None:
        headers["Authorization"] = "Bearer " + bearer
    headers.update(kw.pop("headers", {}))
    return server.post(path or "/v1/functions/%s/invoke" % function, json=TINY if body is None else body,
                       headers=headers, **kw)


def keys_cli(server, *args, env=None):
    """`pilotlight keys ARGS -c pilotlight.yaml`, run in the server's working folder."""
    return run_cli("keys", *args, "-c", "pilotlight.yaml", cwd=server.workdir, env=env)


def state_dir(server):
    return server.workdir / "state"


def key_id(key):
    assert key.startswith("pl_") and key[15] == "_", "not a pl_<id>_<secret> key: %r" % key
    return key[3:15]


def cli_create(server, plan="basic", *extra, via_state_dir=False):
    if via_state_dir:
        p = run_cli("keys", "create", "--plan", plan, "--state-dir", state_dir(server), *extra)
    else:
        p = keys_cli(server, "create", "--plan", plan, *extra)
    assert p.returncode == 0, cli_output(p)
    lines = p.stdout.splitlines()
    assert len(lines) == 1 and lines[0].strip() == lines[0] and lines[0], (
        "keys create must print the key alone on stdout:\n%s" % cli_output(p))
    key = lines[0]
    kid = key_id(key)
    assert kid in p.stderr, "stderr does not name the key's id:\n%s" % cli_output(p)
    assert key not in p.stderr, "the key is also printed on stderr"
    return key


def admin_create(server, plan="basic", **extra):
    r = server.post("/admin/keys", json=dict(extra, plan=plan))
    assert r.status_code == 201, "POST /admin/keys -> %d %s" % (r.status_code, r.text[:500])
    return r.json()


def wait_status(server, function, status, timeout=1.5, **creds):
    """Polls until a request gets `status`; returns (response, seconds waited)."""
    t0 = time.monotonic()
    last = []

    def check():
        r = call(server, function, **creds)
        last[:] = [r]
        return [r] if r.status_code == status else None  # a list: a 4xx Response is falsy

    try:
        r, = support.wait_until(check, timeout, 0.05, "HTTP %d" % status)
    except AssertionError as e:
        raise AssertionError("%s; last answer %d %s" % (e, last[0].status_code, last[0].text[:300])) from None
    return r, time.monotonic() - t0


def rate_headers(r):
    h = r.headers
    missing = [k for k in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset") if k not in h]
    assert not missing, "missing %s: %r" % (missing, dict(h))
    return int(h["RateLimit-Limit"]), int(h["RateLimit-Remaining"]), int(h["RateLimit-Reset"])


def assert_401(r, etype="unauthorized", realm='Bearer realm="pilotlight"'):
    err = assert_error(r, 401, etype)
    www = r.headers.get("WWW-Authenticate", "")
    assert www.startswith(realm), "WWW-Authenticate %r, expected %r..." % (www, realm)
    return err


def assert_403(r, realm='Bearer realm="pilotlight"'):
    err = assert_error(r, 403, "forbidden")
    www = r.headers.get("WWW-Authenticate", "")
    assert www.startswith(realm) and "insufficient_scope" in www, "WWW-Authenticate %r" % www
    return err


def list_json(server):
    p = keys_cli(server, "list", "--json")
    assert p.returncode == 0, cli_output(p)
    return p, {k["id"]: k for k in json.loads(p.stdout)["keys"]}


# --------------------------------------------------------------------------------------
# API keys from the CLI, against the running server
# --------------------------------------------------------------------------------------
def test_cli_key_is_honoured_by_the_running_server(server):
    r = call(server, "tiny_mlp")
    assert_401(r)
    key = cli_create(server, "basic", "--description", "test one")
    r, waited = wait_status(server, "tiny_mlp", 200, key=key)
    assert_ok(r)
    assert waited <= 1.5, waited
    # both ways of sending it
    assert_ok(call(server, "tiny_mlp", bearer=key), "Authorization: Bearer KEY")
    assert_ok(call(server, "tiny_mlp", key=key), "X-Api-Key: KEY")
    # the same key with one character changed is not it
    bad = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert_401(call(server, "tiny_mlp", key=bad))


def test_key_from_state_dir_option(server):
    key = cli_create(server, "basic", via_state_dir=True)
    wait_status(server, "tiny_mlp", 200, key=key)


def test_keys_list_shows_usage_and_never_the_key(server):
    key = cli_create(server, "basic", "--description", "listed")
    kid = key_id(key)
    wait_status(server, "tiny_mlp", 200, key=key)  # 1 request
    for _ in range(2):
        assert_ok(call(server, "tiny_mlp", key=key))

    def listed():
        p, keys = list_json(server)
        k = keys.get(kid)
        return (p, k) if k and k["used_today"] == 3 and k["last_used_at"] else None

    p, k = support.wait_until(listed, 3.0, 0.1, lambda: "usage flushed to `keys list --json`: %s"
                              % keys_cli(server, "list", "--json").stdout[-2000:])
    assert key not in p.stdout and key.split("_", 2)[2] not in p.stdout, "keys list --json shows the key"
    assert k["plan"] == "basic" and k["description"] == "listed" and k["revoked_at"] is None, k
    assert "key" not in k and "hash" not in k, k
    assert time.time() - calendar.timegm(time.strptime(k["last_used_at"][:19], "%Y-%m-%dT%H:%M:%S")) < 60, k
    # the table for people
    p = keys_cli(server, "list")
    assert p.returncode == 0, cli_output(p)
    assert key not in p.stdout and key.split("_", 2)[2] not in p.stdout, "keys list shows the key"
    row = [l for l in p.stdout.splitlines() if l.startswith(kid)]
    assert len(row) == 1, p.stdout
    cols = row[0].split()
    assert cols[1] == "basic" and cols[2] == "3" and cols[3] != "never" and cols[-1] == "active", row


def test_revoked_key_is_refused_within_a_second(server):
    key = cli_create(server, "basic")
    kid = key_id(key)
    wait_status(server, "tiny_mlp", 200, key=key)
    p = keys_cli(server, "revoke", kid)
    assert p.returncode == 0, cli_output(p)
    assert kid in p.stdout, cli_output(p)
    r, waited = wait_status(server, "tiny_mlp", 401, key=key)
    assert_401(r)
    assert "invalid_token" in r.headers["WWW-Authenticate"], r.headers
    assert_401(call(server, "tiny_mlp", bearer=key))
    _, keys = list_json(server)
    assert keys[kid]["revoked_at"], keys[kid]
    p = keys_cli(server, "list")
    assert any(l.startswith(kid) and l.split()[-1] == "revoked" for l in p.stdout.splitlines()), p.stdout


def test_revoke_unknown_id_fails(server):
    p = keys_cli(server, "revoke", "0123456789ab")
    assert p.returncode != 0 and p.stderr.strip(), cli_output(p)


def test_key_restricted_to_one_function(server):
    key = cli_create(server, "basic", "--function", "tiny_mlp")
    wait_status(server, "tiny_mlp", 200, key=key)
    err = assert_403(call(server, "k_other", key=key))
    assert "k_other" in err["message"], err
    assert_403(call(server, "k_default", bearer=key))
    # an unrestricted key reaches both
    other = admin_create(server, "basic")["key"]
    assert_ok(call(server, "k_other", key=other))


def test_function_plans_refuse_other_plans(server):
    basic = cli_create(server, "basic")
    wait_status(server, "tiny_mlp", 200, key=basic)
    err = assert_403(call(server, "k_pro", key=basic))
    assert "basic" in err["message"], err
    pro = cli_create(server, "pro")
    r, _ = wait_status(server, "k_pro", 200, key=pro)
    assert_ok(r)
    assert_ok(call(server, "tiny_mlp", key=pro))  # a function without plans takes any plan


def test_unknown_plan_is_refused_with_a_clear_message(server):
    _, before = list_json(server)
    p = keys_cli(server, "create", "--plan", "gold")
    assert p.returncode != 0, cli_output(p)
    assert p.stdout.strip() == "", "a key was printed:\n" + cli_output(p)
    assert "gold" in p.stderr and "usage_plans" in p.stderr, cli_output(p)
    assert "basic" in p.stderr, "the message does not list the known plans:\n" + cli_output(p)
    _, after = list_json(server)
    assert set(after) == set(before), "a key was stored anyway"


def test_key_store_holds_only_hashes(server):
    import hashlib

    key = cli_create(server, "basic", "--description", "hash check")
    api = admin_create(server, "basic", description="hash check api")["key"]
    wait_status(server, "tiny_mlp", 200, key=key)
    time.sleep(1.2)  # let the server flush usage too
    db = state_dir(server) / "auth.db"
    assert db.is_file(), "no %s" % db
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    try:
        dump = "\n".join(con.iterdump())
    finally:
        con.close()
    files = [p for p in state_dir(server).iterdir() if p.name.startswith("auth.db")]
    for k in (key, api):
        secret = k.split("_", 2)[2]
        for f in files:
            data = f.read_bytes()
            assert k.encode() not in data and secret.encode() not in data, "%s holds the key text" % f
        assert k not in dump and secret not in dump, "the key store holds the key text"
        assert key_id(k) in dump, "the key's id is not in the store"
        assert hashlib.sha256(k.encode()).hexdigest() in dump, "the key's SHA-256 is not in the store"


# --------------------------------------------------------------------------------------
# The admin keys API
# --------------------------------------------------------------------------------------
def test_admin_keys_api(server):
    created = admin_create(server, "basic", functions=["tiny_mlp"], description="from the API")
    key = created["key"]
    kid = created["id"]
    assert key_id(key) == kid, created
    assert created["plan"] == "basic" and created["functions"] == ["tiny_mlp"], created
    assert created["revoked_at"] is None, created
    # usable at once: no wait for the reload
    assert_ok(call(server, "tiny_mlp", key=key), "a key from POST /admin/keys, at once:")
    assert_403(call(server, "k_other", key=key))
    r = server.get("/admin/keys")
    doc = assert_ok(r)
    assert key not in r.text and key.split("_", 2)[2] not in r.text, "GET /admin/keys shows a key"
    listed = {k["id"]: k for k in doc["keys"]}
    assert kid in listed and "key" not in listed[kid], listed.get(kid)
    assert listed[kid]["used_today"] >= 1 and listed[kid]["last_used_at"], listed[kid]
    r = server.request("DELETE", "/admin/keys/" + kid)
    doc = assert_ok(r)
    assert doc["id"] == kid and doc["revoked_at"], doc
    assert "key" not in doc, doc
    assert_401(call(server, "tiny_mlp", key=key))


def test_admin_keys_api_refusals(server):
    assert_error(server.post("/admin/keys", json={"plan": "gold"}), 400, "invalid_input")
    assert_error(server.post("/admin/keys", json={"functions": ["tiny_mlp"]}), 400, "invalid_input")
    r = server.request("DELETE", "/admin/keys/0123456789ab")
    assert r.status_code == 404, r.text[:300]


# --------------------------------------------------------------------------------------
# Usage plans and function rate limits
# --------------------------------------------------------------------------------------
def test_plan_rate_and_burst(server):
    key = admin_create(server, "slow")["key"]  # rate 2/s, burst 3
    remaining = []
    for i in range(3):
        r = call(server, "tiny_mlp", key=key)
        assert_ok(r, "request %d of the burst:" % (i + 1))
        limit, rem, reset = rate_headers(r)
        assert limit == 3, r.headers
        assert reset >= 0, r.headers
        remaining.append(rem)
    assert remaining == [2, 1, 0], "RateLimit-Remaining over the burst: %r" % remaining
    r = call(server, "tiny_mlp", key=key)
    assert_error(r, 429, "rate_limited")
    retry = support.assert_retry_after(r)
    assert 1 <= retry <= 2, retry
    limit, rem, reset = rate_headers(r)
    assert (limit, rem) == (3, 0), r.headers
    assert 1 <= reset <= 2, r.headers
    time.sleep(retry + 0.05)
    r = call(server, "tiny_mlp", key=key)
    assert_ok(r, "after Retry-After:")
    # another key of the same plan has its own bucket
    assert_ok(call(server, "tiny_mlp", key=admin_create(server, "slow")["key"]))


def test_plan_daily_quota(server):
    key = admin_create(server, "daily")["key"]  # quota_per_day 5, high rate
    kid = key_id(key)
    for i in range(5):
        assert_ok(call(server, "tiny_mlp", key=key), "request %d of a quota of 5:" % (i + 1))
    for _ in range(2):
        r = call(server, "tiny_mlp", key=key)
        assert_error(r, 429, "quota_exceeded")
        retry = support.assert_retry_after(r)
        now = time.time()
        to_midnight = 86400 - int(now) % 86400
        assert 1 <= retry <= to_midnight + 2, "Retry-After %d, next UTC midnight in %ds" % (retry, to_midnight)
        assert retry >= to_midnight - 5, "Retry-After %d is not the next UTC midnight (%ds)" % (retry, to_midnight)
    # refusals do not count as use
    listed = {k["id"]: k for k in assert_ok(server.get("/admin/keys"))["keys"]}
    assert listed[kid]["used_today"] == 5, listed[kid]
    # the quota is the key's, not the plan's
    assert_ok(call(server, "tiny_mlp", key=admin_create(server, "daily")["key"]))


def test_function_rate_limit_for_anonymous_callers(server):
    remaining = []
    for i in range(3):
        r = call(server, "t_limited")
        assert_ok(r, "request %d of a burst of 3:" % (i + 1))
        limit, rem, _ = rate_headers(r)
        assert limit == 3, r.headers
        remaining.append(rem)
    assert remaining == [2, 1, 0], remaining
    r = call(server, "t_limited")
    err = assert_error(r, 429, "rate_limited")
    assert "t_limited" in err["message"], err
    retry = support.assert_retry_after(r)
    assert retry == 1, retry
    assert rate_headers(r)[:2] == (3, 0), r.headers
    # a function without a rate limit is not affected, and has no RateLimit headers
    r = call(server, "t_open")
    assert_ok(r)
    assert "RateLimit-Limit" not in r.headers, r.headers
    time.sleep(retry + 0.05)
    assert_ok(call(server, "t_limited"), "after Retry-After:")


# --------------------------------------------------------------------------------------
# JWTs, shared routes, auth.default
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("alg", ["RS256", "ES256", "HS256"])
def test_valid_jwt(server, signers, alg):
    token = signers.token(alg)
    assert_ok(call(server, "t_jwt", bearer=token), alg)
    # through the shared routes too: the target function's auth applies
    assert_ok(call(server, None, bearer=token, path="/v1/infer?model=t_jwt"), "/v1/infer " + alg)
    v2 = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": tiny_rows(1)[0]}]}
    r = call(server, None, bearer=token, path="/v2/models/t_jwt/infer", body=v2)
    doc = assert_ok(r, "/v2 " + alg)
    assert doc["outputs"][0]["shape"] == [1, 4], doc


def test_jwt_function_refuses_without_token_on_every_route(server, signers):
    assert_401(call(server, "t_jwt"))
    assert_401(call(server, None, path="/v1/infer?model=t_jwt"))
    assert_401(call(server, None, path="/v1/infer", headers={"X-Model": "t_jwt"}))
    v2 = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": tiny_rows(1)[0]}]}
    r = call(server, None, path="/v2/models/t_jwt/infer", body=v2)
    assert r.status_code == 401, r.text[:300]
    assert isinstance(r.json().get("error"), str), r.text  # the v2 error shape
    assert r.headers.get("WWW-Authenticate", "").startswith('Bearer realm="pilotlight"'), r.headers
    for path in ("/v2/models/t_jwt", "/v2/models/t_jwt/ready"):  # metadata too
        r = server.get(path, headers=NO_AUTH)
        assert r.status_code == 401, "%s -> %d %s" % (path, r.status_code, r.text[:300])
        r = server.get(path, headers={"Authorization": "Bearer " + signers.token("HS256")})
        assert r.status_code == 200, "%s -> %d %s" % (path, r.status_code, r.text[:300])
    # an API key is not a JWT
    key = admin_create(server, "basic")["key"]
    assert_401(call(server, "t_jwt", bearer=key))
    # and a JWT is not an API key
    assert_401(call(server, "tiny_mlp", bearer=signers.token("RS256")))


def test_batch_applies_each_items_function_auth(server, signers):
    token = signers.token("ES256")
    r = call(server, None, bearer=token, path="/v1/batch?model=t_jwt", body=[TINY, TINY])
    doc = assert_ok(r)
    assert len(doc) == 2 and all("outputs" in d for d in doc), doc
    # without a token: the batch is answered, each item with its own refusal
    r = call(server, None, path="/v1/batch?model=t_jwt", body=[TINY, TINY])
    doc = assert_ok(r)
    assert len(doc) == 2, doc
    for item in doc:
        assert item.get("error", {}).get("type") == "unauthorized", doc


def test_shared_route_applies_target_function_auth(server):
    key = admin_create(server, "basic")["key"]
    assert_401(call(server, None, path="/v1/infer?model=tiny_mlp"))
    assert_ok(call(server, None, key=key, path="/v1/infer?model=tiny_mlp"))
    assert_ok(call(server, None, path="/v1/infer?model=t_open"))
    v2 = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": tiny_rows(1)[0]}]}
    assert call(server, None, path="/v2/models/k_default/infer", body=v2).status_code == 401
    assert_ok(call(server, None, key=key, path="/v2/models/k_default/infer", body=v2))


def test_auth_default_applies_to_functions_without_auth(server):
    assert_401(call(server, "k_default"))
    key = admin_create(server, "basic")["key"]
    assert_ok(call(server, "k_default", key=key))
    assert_ok(call(server, "k_default", bearer=key))
    # auth: none stays open, with or without credentials
    assert_ok(call(server, "t_open"))
    assert_ok(call(server, "t_open", key="pl_000000000000_nonsense"))


# --------------------------------------------------------------------------------------
# The admin API
# --------------------------------------------------------------------------------------
ADMIN_ROUTES = [
    ("GET", "/v1/events", None),
    ("GET", "/v1/events/0123456789abcdef", None),
    ("POST", "/v1/events/0123456789abcdef/redrive", b""),
    ("GET", "/v1/jobs", None),
    ("POST", "/admin/models/digits/promote", {"version": "1.0.0"}),
    ("POST", "/admin/models/digits/rollback", {}),
    ("GET", "/admin/keys", None),
    ("POST", "/admin/keys", {"plan": "basic"}),
    ("DELETE", "/admin/keys/0123456789ab", None),
]


def admin_request(server, method, path, body, headers):
    kw = {"headers": headers}
    if isinstance(body, (dict, list)):
        kw["json"] = body
    elif body is not None:
        kw["data"] = body
    return server.request(method, path, **kw)


@pytest.mark.parametrize("method,path,body", ADMIN_ROUTES, ids=lambda x: x if isinstance(x, str) else "")
def test_admin_route_without_token_is_401(server, method, path, body):
    r = admin_request(server, method, path, body, dict(NO_AUTH))
    assert_401(r, realm=ADMIN_REALM)
    assert r.headers["WWW-Authenticate"] == ADMIN_REALM, r.headers


@pytest.mark.parametrize("method,path,body", ADMIN_ROUTES, ids=lambda x: x if isinstance(x, str) else "")
def test_admin_route_with_api_key_is_403(server, method, path, body):
    key = admin_create(server, "basic")["key"]
    r = admin_request(server, method, path, body, {"Authorization": "Bearer " + key})
    assert_403(r, realm=ADMIN_REALM)
    r = admin_request(server, method, path, body, dict(NO_AUTH, **{"X-Api-Key": key}))
    assert_403(r, realm=ADMIN_REALM)


def test_admin_token_is_accepted(server):
    assert_ok(server.get("/v1/jobs"))
    assert_ok(server.get("/v1/events"))


def _env_without_token():
    env = dict(support.CHILD_ENV)
    env.pop("PILOTLIGHT_ADMIN_TOKEN", None)
    return env


def test_server_without_admin_token_refuses_admin_api(start_server):
    s = start_server({"functions": {"tiny_mlp": {}}}, env=_env_without_token())
    for method, path, body in [("GET", "/admin/keys", None), ("GET", "/v1/jobs", None),
                               ("POST", "/admin/models/tiny_mlp/promote", {"version": "1.0.0"})]:
        for headers in (dict(NO_AUTH), {"Authorization": "Bearer " + support.ADMIN_TOKEN}):
            r = admin_request(s, method, path, body, headers)
            err = assert_401(r, realm=ADMIN_REALM)
            assert "PILOTLIGHT_ADMIN_TOKEN" in err["message"], err
    # everything else still works
    assert_ok(s.invoke("tiny_mlp", TINY))


def test_custom_admin_token_env(start_server):
    env = _env_without_token()
    env["PL_TEST_CUSTOM_ADMIN"] = "custom-admin-" + secrets.token_hex(16)
    s = start_server({"auth": {"admin_token_env": "PL_TEST_CUSTOM_ADMIN"}, "functions": {"tiny_mlp": {}}},
                     env=env)
    assert_401(s.get("/v1/jobs", headers=NO_AUTH), realm=ADMIN_REALM)
    assert_ok(s.get("/v1/jobs", headers={"Authorization": "Bearer " + env["PL_TEST_CUSTOM_ADMIN"]}))
    # without the variable, the message names it
    s2 = start_server({"auth": {"admin_token_env": "PL_TEST_CUSTOM_ADMIN"}, "functions": {"tiny_mlp": {}}},
                      env=_env_without_token())
    err = assert_401(s2.get("/v1/jobs"), realm=ADMIN_REALM)
    assert "PL_TEST_CUSTOM_ADMIN" in err["message"], err


def test_cli_events_list_sends_the_admin_token(server):
    p = run_cli("events", "list", "--url", server.url)
    assert p.returncode == 0, cli_output(p)
    assert "ID" in p.stdout, cli_output(p)
    p = run_cli("events", "list", "--url", server.url, "--json")
    assert p.returncode == 0, cli_output(p)
    assert "events" in json.loads(p.stdout), p.stdout
    p = run_cli("events", "list", "--url", server.url, env=_env_without_token())
    assert p.returncode != 0, cli_output(p)
    assert "401" in p.stderr and "PILOTLIGHT_ADMIN_TOKEN" in p.stderr, cli_output(p)


def test_cli_promote_through_server_sends_the_admin_token(server):
    p = run_cli("model", "promote", "digits", "1.0.0", "--server", server.url)
    assert p.returncode == 0, cli_output(p)
    assert "promoted digits" in p.stdout, cli_output(p)
    p = run_cli("model", "promote", "digits", "1.0.0", "--server", server.url, env=_env_without_token())
    assert p.returncode != 0, cli_output(p)
    assert "401" in p.stderr and "PILOTLIGHT_ADMIN_TOKEN" in p.stderr, cli_output(p)
    env = dict(support.CHILD_ENV, PILOTLIGHT_ADMIN_TOKEN="wrong-" + secrets.token_hex(16))
    p = run_cli("model", "promote", "digits", "1.0.0", "--server", server.url, env=env)
    assert p.returncode != 0 and "401" in p.stderr, cli_output(p)
