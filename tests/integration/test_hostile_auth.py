"""Hostile credentials (hostile_corpus.AUTH_CASES) against a server with auth configured:
forged, tampered, expired and malformed JWTs get 401 with WWW-Authenticate; a missing or
unknown API key gets 401; the admin routes without the admin token, or with a wrong one, get
401 — and after each, a request with a good JWT on a new connection still gets 200.

The JWKS is a file next to the config (`jwks: file://./jwks.json`). The server's working
directory is also the config's folder, so the module server finds it whichever of the two a
relative file:// path is resolved against; test_relative_jwks_path_resolution tells them apart.
"""

import base64
import hashlib
import hmac
import json
import secrets
import time

import pytest

try:
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
except ImportError as e:  # a collection error, not a silent skip
    raise ImportError("%s: install PyJWT and cryptography (apt-get install -y python3-jwt "
                      "python3-cryptography; tools/setup.sh does)" % e) from None

import hostile_corpus as corpus
from hostile_corpus import check_case, run_case
import rawhttp
import support

ISSUER = "https://issuer.example"
AUDIENCE = "pilotlight"
KID = "k1"
FUNCTIONS = {"idle_timeout": "600s", "min_instances": 1}
CONFIG = {
    "auth": {
        "admin_token_env": "PILOTLIGHT_ADMIN_TOKEN",
        "jwt": {"jwks": "file://./jwks.json", "issuer": ISSUER, "audience": AUDIENCE},
    },
    "usage_plans": {"basic": {"rate": 10, "burst": 20, "quota_per_day": 10000}},
    "functions": {
        "tiny_mlp": dict(FUNCTIONS, auth="jwt"),
        "digits": dict(FUNCTIONS, auth="api_key"),
        "all_dtypes": dict(FUNCTIONS),  # no auth: stays open
    },
}


# --------------------------------------------------------------------------------------
# Keys and tokens
# --------------------------------------------------------------------------------------
def b64url(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj):
    return b64url(json.dumps(obj, separators=(",", ":")))


def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(private_key, kid, alg):
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key()))
    jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    return jwk


class Keys:
    def __init__(self):
        self.real = rsa_key()
        self.attacker = rsa_key()
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.jwks = {"keys": [public_jwk(self.real, KID, "RS256")]}
        self.public_pem = self.real.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def claims(self, **over):
        now = int(time.time())
        c = {"sub": "hostile-tests", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now - 5,
             "exp": now + 3600}
        for k, v in over.items():
            if v is None:
                c.pop(k, None)
            else:
                c[k] = v
        return c

    def sign(self, claims=None, key=None, alg="RS256", headers=None):
        h = {"kid": KID}
        h.update(headers or {})
        return jwt.encode(claims if claims is not None else self.claims(), key or self.real, algorithm=alg,
                          headers=h)

    def forged(self):
        """ctx["jwt_<name>"] for every name in corpus.FORGED_JWTS."""
        good = self.sign()
        gh, gp, gs = good.split(".")
        now = int(time.time())
        hs_input = "%s.%s" % (b64json({"alg": "HS256", "typ": "JWT", "kid": KID}), gp)
        hs_sig = b64url(hmac.new(self.public_pem, hs_input.encode(), hashlib.sha256).digest())
        attacker_jwk = public_jwk(self.attacker, "attacker", "RS256")
        tokens = {
            "alg_none": "%s.%s." % (b64json({"alg": "none", "typ": "JWT"}), gp),
            "alg_none_capitalised": "%s.%s." % (b64json({"alg": "None", "typ": "JWT"}), gp),
            "alg_none_with_signature": "%s.%s.%s" % (b64json({"alg": "none", "kid": KID}), gp, gs),
            "hs256_with_rsa_public_key": hs_input + "." + hs_sig,
            "bad_signature": self.sign(key=self.attacker),
            "tampered_payload": "%s.%s.%s" % (gh, b64json(self.claims(sub="admin", exp=now + 86400 * 365)), gs),
            "tampered_header_kid": "%s.%s.%s" % (b64json({"alg": "RS256", "typ": "JWT", "kid": KID, "x": 1}),
                                                 gp, gs),
            "signature_stripped": "%s.%s." % (gh, gp),
            "expired": self.sign(self.claims(iat=now - 7200, nbf=now - 7200, exp=now - 3600)),
            "nbf_future": self.sign(self.claims(nbf=now + 3600, exp=now + 7200)),
            "wrong_issuer": self.sign(self.claims(iss="https://evil.example")),
            "wrong_audience": self.sign(self.claims(aud="someone-else")),
            "missing_exp": self.sign(self.claims(exp=None)),
            "unknown_kid": self.sign(key=self.attacker, headers={"kid": "unknown-kid"}),
            # the real key's kid, so only trusting the header's own key material would verify them
            "embedded_jwk": self.sign(key=self.attacker, headers={"jwk": attacker_jwk}),
            "jku_header": self.sign(key=self.attacker, headers={"jku": "http://127.0.0.1:1/jwks.json",
                                                                "x5u": "http://127.0.0.1:1/cert.pem"}),
            "es256_alg_for_rsa_kid": self.sign(key=self.ec, alg="ES256"),
            "garbage": "not-a-jwt",
            "two_segments": "%s.%s" % (gh, gp),
            "four_segments": good + ".AAAA",
            "invalid_base64": "!!!.@@@.###",
            "header_not_json": "%s.%s.%s" % (b64url("hello"), gp, gs),
            "payload_array": jwt.api_jws.PyJWS().encode(b"[1,2]", self.real, algorithm="RS256",
                                                        headers={"kid": KID}),
            "oversized_50k": "%s.%s.%s" % (gh, b64url(secrets.token_bytes(37000)), gs),
        }
        assert set(tokens) == {n for n, _ in corpus.FORGED_JWTS}, set(tokens) ^ {n for n, _ in corpus.FORGED_JWTS}
        return {"jwt_" + k: v for k, v in tokens.items()}


# --------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keys():
    return Keys()


@pytest.fixture(scope="module")
def ctx(keys):
    c = {"good_jwt": keys.sign(), "admin_token": "adm-" + secrets.token_hex(24)}
    c.update(keys.forged())
    return c


def _auth_env(ctx):
    env = dict(support.CHILD_ENV)
    env["PILOTLIGHT_ADMIN_TOKEN"] = ctx["admin_token"]
    return env


@pytest.fixture(scope="module")
def auth_factory(store, tmp_path_factory, keys):
    """A ServerFactory whose every working folder (the config's folder) holds jwks.json."""
    factory = support.ServerFactory(tmp_path_factory.mktemp("auth_servers"), store.uri)
    new_workdir = factory._workdir

    def workdir_with_jwks():
        d = new_workdir()
        (d / "jwks.json").write_text(json.dumps(keys.jwks), encoding="utf-8")
        return d

    factory._workdir = workdir_with_jwks
    yield factory
    problems = factory.stop_all()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def auth_server(auth_factory, ctx):
    # The server runs in its working folder, which is also the config's: jwks.json is found
    # whichever of the two a relative file:// path is resolved against.
    return auth_factory.shared(CONFIG, env=_auth_env(ctx))


@pytest.fixture
def server(auth_server):
    return auth_server.get()


def good_request(ctx):
    return corpus.post(corpus.AUTH_JWT_FN, corpus._bearer(ctx["good_jwt"]) + b"Connection: close\r\n")


def assert_still_serving(server, ctx, after):
    assert server.alive(), "the server died after %s (exit %s)\n%s" % (
        after, server.proc.poll(), server.diagnostics(3000))
    ex = rawhttp.exchange(server.port, good_request(ctx), timeout=10)
    assert ex.status == 200, "a request with a good JWT after %s: %s" % (after, ex.describe())


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", corpus.AUTH_CONTROLS, ids=lambda c: c.id)
def test_valid_credentials_are_accepted(server, ctx, case):
    parts, ex = run_case(server, case, ctx)
    assert ex.status == 200, "%s: expected 200, got %s" % (case.id, ex.describe())


@pytest.mark.parametrize("case", corpus.AUTH_CASES, ids=lambda c: c.id)
def test_hostile_credentials(server, ctx, case):
    parts, ex = run_case(server, case, ctx)
    problems = []
    for check in (lambda: check_case(case, ex, parts), lambda: assert_still_serving(server, ctx, case.id)):
        try:
            check()
        except AssertionError as e:
            problems.append(str(e))
    assert not problems, "\n".join(problems)


def test_relative_jwks_path_resolution(auth_factory, ctx, tmp_path, record_property):
    """`jwks: file://./jwks.json` with the JWKS only next to the config and the server started in
    another folder. Either resolution is defensible (the store and state_dir resolve against the
    working directory), but it must not fail silently: the server either serves a good JWT
    (resolved against the config's folder) or refuses to start naming the JWKS (resolved
    against the working directory) — never starts and then refuses every valid token."""
    elsewhere = tmp_path / "elsewhere"  # the working directory: no jwks.json here
    elsewhere.mkdir()
    try:
        s = auth_factory.start(CONFIG, env=_auth_env(ctx), cwd=elsewhere)
    except AssertionError as e:
        text = str(e)
        record_property("jwks_resolution", "working directory (refused to start)")
        assert "jwks" in text.lower(), "the server did not start, and not because of the JWKS:\n" + text[-3000:]
        return
    ex = rawhttp.exchange(s.port, good_request(ctx), timeout=10)
    record_property("jwks_resolution", "config folder" if ex.status == 200 else "broken: %s" % ex.status)
    assert ex.status == 200, (
        "the server started with a JWKS path it could not read (it resolved file://./jwks.json against "
        "%s?) and answered a good JWT with %s" % (elsewhere, ex.describe()))


def test_chunked_trailer_cannot_supply_credentials(server, ctx):
    """Beast merges chunked trailer fields into the headers; the server must ignore them, or a
    trailer could carry an Authorization (or X-Api-Key) that no header check or front proxy saw.
    The same request with the token in the head is served."""
    body = b'{"inputs":[[' + b",".join([b"0.5"] * 16) + b']]}'
    chunked = b"%x\r\n%s\r\n0\r\n" % (len(body), body)
    head = (b"POST " + corpus.AUTH_JWT_FN + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n")
    bearer = b"Authorization: Bearer " + ctx["good_jwt"].encode() + b"\r\n"
    in_trailer = rawhttp.exchange(server.port, head + b"\r\n" + chunked + bearer + b"\r\n", timeout=10)
    assert in_trailer.status == 401, "a token in a trailer was used: " + in_trailer.describe()
    in_head = rawhttp.exchange(server.port, head + bearer + b"\r\n" + chunked + b"\r\n", timeout=10)
    assert in_head.status == 200, "the same request with the token in the head: " + in_head.describe()
