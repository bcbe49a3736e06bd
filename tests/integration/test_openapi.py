"""The OpenAPI document (src/gateway/openapi.json) against the real server.

(a) The document is valid OpenAPI 3.0 and the server serves it at GET /openapi.json (the server
    may add the POST paths of functions' `routes:`, nothing else).
(b) Every documented operation answers: each (method, path) is called with real values — a
    bundled model (tiny_mlp), a process function (tests/integration/lambda handlers.echo), a
    real event id from invoke-async, a real dead letter for redrive, an API key made by
    POST /admin/keys — with the admin token where the operation's security says AdminToken. The
    answer must not be the server's "no route" 404 nor a 405, its status must be one the
    document lists for the operation (`default` does not count), the headers the document marks
    required must be there, and a JSON body must validate against the documented schema.
(c) docs/api-reference.md is what tools/gen_api_reference.py renders from the document.

Validation uses python3-jsonschema (Debian). Debian 12 has no python3-openapi-spec-validator: when
openapi_spec_validator is importable it is used as well; otherwise the document is checked
against the official OpenAPI 3.0 JSON Schema (schemas/openapi-3.0.json, the OpenAPI
Initiative's schemas/v3.0/schema.json of 2019-04-02, as Debian's
python3-djangorestframework-spectacular ships it) plus the semantic rules that schema cannot
express (resolvable $refs, declared path parameters, unique operationIds, known security
schemes).

The reverse direction (every route the server answers is documented) is a C++ unit test over the
gateway's route table.
"""

import copy
import json
import subprocess
import sys
import urllib.parse
from pathlib import Path

import jsonschema
import pytest

from support import CHILD_ENV, REPO, tiny_rows, wait_until

SPEC_PATH = REPO / "src" / "gateway" / "openapi.json"
OAS_SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "openapi-3.0.json"
GENERATOR = REPO / "tools" / "gen_api_reference.py"
LAMBDA_DIR = (Path(__file__).resolve().parent / "lambda").absolute()
BOOTSTRAP = ["/usr/bin/python3", str(LAMBDA_DIR / "bootstrap.py")]

ADMIN_TOKEN = "openapi-test-admin-token-0123456789abcdef"
EXTRA_ROUTE = "/predict/tiny"
KEY_PLAN = "default"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def load_spec():
    with open(SPEC_PATH, "r", encoding="utf-8") as f:
        return json.load(f)


try:
    SPEC = load_spec()
    SPEC_ERROR = None
except (OSError, ValueError) as e:  # reported by the tests, not at collection
    SPEC, SPEC_ERROR = {"paths": {}}, "%s: %s" % (SPEC_PATH, e)


def operations(spec):
    for path, item in spec.get("paths", {}).items():
        for method, op in item.items():
            if method in METHODS:
                yield method, path, op


OPERATIONS = list(operations(SPEC))


def resolve(spec, obj):
    while isinstance(obj, dict) and "$ref" in obj:
        node = spec
        for part in obj["$ref"][2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        obj = node
    return obj


# --------------------------------------------------------------------------------------------
# OpenAPI schema objects -> JSON Schema (draft 4, which OpenAPI 3.0 schemas extend)
# --------------------------------------------------------------------------------------------
def to_json_schema(node):
    """OpenAPI 3.0 schema objects use `nullable: true` where JSON Schema uses a "null" type."""
    if isinstance(node, list):
        return [to_json_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items()}
    if out.pop("nullable", False):
        if "type" in out:
            out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else out["type"] + ["null"]
            if "enum" in out:
                out["enum"] = out["enum"] + [None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


class BodyValidator:
    """Validates JSON values against schemas of the document, $refs included."""

    def __init__(self, spec):
        self.doc = to_json_schema(spec)
        self.resolver = jsonschema.RefResolver(base_uri="", referrer=self.doc)

    def errors(self, schema, value):
        v = jsonschema.Draft4Validator(to_json_schema(schema), resolver=self.resolver)
        return sorted(v.iter_errors(value), key=lambda e: list(e.absolute_path))


def describe_errors(errors, limit=5):
    return "\n".join("  at %s: %s" % ("/".join(str(p) for p in e.absolute_path) or "(root)", e.message[:300])
                     for e in errors[:limit])


# --------------------------------------------------------------------------------------------
# (a) the document
# --------------------------------------------------------------------------------------------
def openapi_problems(spec):
    """Everything that makes `spec` invalid OpenAPI 3.0, as text lines (empty: valid)."""
    problems = []
    with open(OAS_SCHEMA_PATH, "r", encoding="utf-8") as f:
        oas = json.load(f)
    for e in sorted(jsonschema.Draft4Validator(oas).iter_errors(spec), key=lambda e: list(e.absolute_path)):
        problems.append("schema: at %s: %s" % ("/".join(str(p) for p in e.absolute_path), e.message[:300]))

    def walk(node, where):
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                try:
                    resolve(spec, {"$ref": ref})
                except (KeyError, TypeError):
                    problems.append("unresolvable $ref %s at %s" % (ref, where))
            for k, v in node.items():
                walk(v, where + "/" + str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, "%s/%d" % (where, i))

    walk(spec, "#")
    if problems:
        return problems  # the rest assumes a well-formed document

    schemes = spec.get("components", {}).get("securitySchemes", {})
    op_ids = {}
    for path, item in spec.get("paths", {}).items():
        template = {seg[1:-1] for seg in path.split("/") if seg.startswith("{") and seg.endswith("}")}
        common = [resolve(spec, p) for p in item.get("parameters", [])]
        for method, op in item.items():
            if method not in METHODS:
                continue
            where = "%s %s" % (method.upper(), path)
            own = [resolve(spec, p) for p in op.get("parameters", [])]
            keys = [(p["name"], p["in"]) for p in own]
            if len(keys) != len(set(keys)):
                problems.append("%s: duplicate parameters %s" % (where, keys))
            merged = {(p["name"], p["in"]): p for p in common}
            merged.update({(p["name"], p["in"]): p for p in own})
            declared = {name for (name, loc), p in merged.items() if loc == "path"}
            if declared != template:
                problems.append("%s: path parameters declared %s, template has %s" % (
                    where, sorted(declared), sorted(template)))
            for (name, loc), p in merged.items():
                if loc == "path" and not p.get("required"):
                    problems.append("%s: path parameter %s must be required" % (where, name))
            op_id = op.get("operationId")
            if op_id in op_ids:
                problems.append("%s: operationId %s also used by %s" % (where, op_id, op_ids[op_id]))
            op_ids[op_id] = where
            for req in op.get("security", spec.get("security", [])):
                for name in req:
                    if name not in schemes:
                        problems.append("%s: unknown security scheme %s" % (where, name))
    # Paths that differ only in their parameter names are the same path (OpenAPI forbids it).
    shapes = {}
    for path in spec.get("paths", {}):
        shape = "/".join("{}" if s.startswith("{") else s for s in path.split("/"))
        if shape in shapes:
            problems.append("paths %s and %s are identical up to parameter names" % (shapes[shape], path))
        shapes[shape] = path
    return problems


def spec_validator_problems(spec):
    """openapi-spec-validator's verdict, when the module is installed (None when it is not)."""
    try:
        import openapi_spec_validator as osv
    except ImportError:
        return None
    try:
        if hasattr(osv, "validate"):
            osv.validate(copy.deepcopy(spec))
        else:
            osv.validate_spec(copy.deepcopy(spec))
    except Exception as e:  # its exception types differ between versions
        return ["openapi-spec-validator: %s" % str(e)[:2000]]
    return []


def test_document_is_valid_openapi_3_0():
    assert SPEC_ERROR is None, SPEC_ERROR
    assert SPEC.get("openapi", "").startswith("3.0."), SPEC.get("openapi")
    assert SPEC["info"]["title"] == "pilotlight"
    assert SPEC["servers"] == [{"url": "http://127.0.0.1:8080"}]
    problems = openapi_problems(SPEC)
    assert not problems, "src/gateway/openapi.json is not valid OpenAPI 3.0:\n" + "\n".join(problems[:40])
    problems = spec_validator_problems(SPEC)
    assert not problems, "\n".join(problems or [])


def test_every_operation_has_an_id_a_summary_a_description_and_responses():
    assert SPEC_ERROR is None, SPEC_ERROR
    missing = []
    for method, path, op in OPERATIONS:
        for key in ("operationId", "summary", "description", "tags"):
            if not op.get(key):
                missing.append("%s %s: no %s" % (method.upper(), path, key))
        if not any(code[0] in "23" for code in op.get("responses", {})):
            missing.append("%s %s: no success response" % (method.upper(), path))
    assert not missing, "\n".join(missing)


def test_examples_match_their_schemas():
    """Every `example` of a schema or a media type is an instance of its schema."""
    assert SPEC_ERROR is None, SPEC_ERROR
    validator = BodyValidator(SPEC)
    bad = []
    for name, schema in SPEC.get("components", {}).get("schemas", {}).items():
        if "example" in schema:
            errs = validator.errors({"$ref": "#/components/schemas/" + name}, schema["example"])
            if errs:
                bad.append("schema %s:\n%s" % (name, describe_errors(errs)))

    def media(node, where):
        if isinstance(node, dict):
            if "schema" in node and "example" in node and isinstance(node["schema"], dict):
                errs = validator.errors(node["schema"], node["example"])
                if errs:
                    bad.append("%s:\n%s" % (where, describe_errors(errs)))
            for k, v in node.items():
                media(v, where + "/" + k)

    media(SPEC.get("paths", {}), "paths")
    assert not bad, "\n".join(bad)


def test_api_reference_is_up_to_date():
    p = subprocess.run([sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, ("docs/api-reference.md is stale: run /usr/bin/python3 tools/gen_api_reference.py\n"
                               + p.stdout[-2000:] + p.stderr[-3000:])


# --------------------------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------------------------
def proc_fn(handler, **keys):
    spec = {"runtime": "process", "command": BOOTSTRAP, "handler": handler, "cwd": str(LAMBDA_DIR)}
    spec.update(keys)
    return spec


def file_uri(path):
    return "file://" + str(Path(path).resolve())


@pytest.fixture(scope="module")
def api(store, module_servers, tmp_path_factory):
    """A server on a private copy of the session store (promote/rollback write to it), with the
    admin token, an onnx function with an extra route, a process function, a process function
    whose events dead-letter at once, a local-folder trigger and a usage plan for API keys."""
    import shutil

    base = tmp_path_factory.mktemp("openapi")
    store_dir = base / "models"
    shutil.copytree(store.path, store_dir)
    inbox, outbox = base / "inbox", base / "outbox"
    inbox.mkdir()
    outbox.mkdir()
    config = {
        "server": {"poll_interval": "0s"},
        "functions": {
            "tiny_mlp": {"routes": [EXTRA_ROUTE]},
            "digits": {},
            "web": proc_fn("handlers.echo"),
            "failing": proc_fn("handlers.fail", **{"async": {"max_retries": 0, "retry_backoff": "100ms"}}),
        },
        "triggers": [{"source": file_uri(inbox), "function": "digits", "output": file_uri(outbox)}],
        "usage_plans": {KEY_PLAN: {"rate": 1000, "burst": 1000}},
    }
    env = dict(CHILD_ENV, PILOTLIGHT_ADMIN_TOKEN=ADMIN_TOKEN)
    server = module_servers.start(json.dumps(config, indent=1), store="file://" + str(store_dir), env=env)
    return Api(server)


class Api:
    """The server plus the real ids the operations need, made on first use."""

    def __init__(self, server):
        self.server = server
        self._cache = {}

    def admin_headers(self):
        return {"Authorization": "Bearer " + ADMIN_TOKEN}

    def _once(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def event_id(self):
        def make():
            r = self.server.post("/v1/functions/tiny_mlp/invoke-async", json={"inputs": tiny_rows(1)})
            if r.status_code == 202:
                return r.json()["event_id"]
            return "0" * 32
        return self._once("event_id", make)

    def dead_letter_id(self):
        """An event of `failing` (no retries), once it is a dead letter."""
        def make():
            r = self.server.post("/v1/functions/failing/invoke-async", json={"boom": True})
            if r.status_code != 202:
                return self.event_id()
            eid = r.json()["event_id"]

            def dead():
                g = self.server.get("/v1/events/" + eid, headers=self.admin_headers())
                return g.status_code == 200 and g.json().get("status") == "dead_letter"
            try:
                wait_until(dead, 60, 0.1, "event %s to be dead-lettered" % eid)
            except AssertionError:
                pass  # redrive then answers 409, which the document also lists
            return eid
        return self._once("dead_letter_id", make)

    def new_key(self):
        """A fresh API key record (with `key`), or None when keys cannot be created."""
        r = self.server.post("/admin/keys", json={"plan": KEY_PLAN, "description": "test_openapi"},
                             headers=self.admin_headers())
        if r.status_code == 201:
            return r.json()
        return None

    def api_key(self):
        return self._once("api_key", lambda: (self.new_key() or {}).get("key"))

    def key_id_to_revoke(self):
        return self._once("revoke", lambda: (self.new_key() or {}).get("id") or "no-such-key")


# --------------------------------------------------------------------------------------------
# (a) the served document
# --------------------------------------------------------------------------------------------
def test_served_document_is_the_file(api):
    assert SPEC_ERROR is None, SPEC_ERROR
    r = api.server.get("/openapi.json")
    assert r.status_code == 200, "GET /openapi.json -> %d %s" % (r.status_code, r.text[:500])
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers.get("Content-Type")
    served = r.json()
    extra = sorted(set(served.get("paths", {})) - set(SPEC["paths"]))
    assert set(extra) <= {EXTRA_ROUTE}, "paths served but not in src/gateway/openapi.json: %s" % extra
    for path in extra:
        methods = set(served["paths"][path]) & set(METHODS)
        assert methods == {"post"}, "extra route %s should be a POST operation, is %s" % (path, sorted(methods))
    trimmed = dict(served, paths={k: v for k, v in served["paths"].items() if k not in extra})
    assert trimmed == SPEC, "GET /openapi.json differs from src/gateway/openapi.json (was the binary rebuilt?)"
    problems = openapi_problems(served)
    assert not problems, "the served document is not valid OpenAPI 3.0:\n" + "\n".join(problems[:40])


# --------------------------------------------------------------------------------------------
# (b) every documented operation answers
# --------------------------------------------------------------------------------------------
ROW = tiny_rows(1)
V2_BODY = {"id": "openapi-test",
           "inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": ROW[0]}]}
S3_TEST_EVENT = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-01-01T00:00:00.000Z",
                 "Bucket": "uploads", "RequestId": "0123456789ABCDEF", "HostId": "test"}


def request_for(api, method, path):
    """(path with real values, requests kwargs) for one documented operation."""
    process = "/invoke" in path and (method != "post" or path.endswith("{proxy}"))
    values = {"name": "web" if process else "tiny_mlp", "proxy": "items/42", "version": "1.0.0"}
    kw = {}
    if path.startswith("/v1/events/{id}"):
        values["id"] = api.dead_letter_id() if path.endswith("/redrive") else api.event_id()
    elif path.startswith("/admin/keys/{id}"):
        values["id"] = api.key_id_to_revoke()
    real = path
    for name, value in values.items():
        real = real.replace("{%s}" % name, value if name == "proxy" else urllib.parse.quote(value, safe=""))

    key = (method, path)
    if key == ("post", "/v1/functions/{name}/invoke") or key == ("post", "/v1/functions/{name}/invoke-async"):
        kw["json"] = {"inputs": ROW}
    elif process and method != "get":
        kw["json"] = {"hello": "openapi", "method": method}
    elif key == ("post", "/v1/infer"):
        kw["json"] = {"model": "tiny_mlp", "inputs": ROW}
    elif key == ("post", "/v1/batch"):
        kw["json"] = [{"model": "tiny_mlp", "inputs": ROW}, {"model": "tiny_mlp", "inputs": tiny_rows(2, 0.5)}]
    elif key == ("post", "/2015-03-31/functions/{name}/invocations"):
        kw["json"] = {"inputs": ROW}
        kw["headers"] = {"X-Amz-Log-Type": "Tail"}
    elif key == ("post", "/v1/events/s3"):
        kw["json"] = S3_TEST_EVENT
    elif key == ("post", "/admin/models/{name}/promote"):
        kw["json"] = {"version": "2.0.0"}
    elif key == ("post", "/admin/keys"):
        kw["json"] = {"plan": KEY_PLAN, "description": "test_openapi: createApiKey"}
    elif path.startswith("/v2/models/") and path.endswith("/infer"):
        kw["json"] = V2_BODY
    elif method in ("post", "put", "patch"):
        # An operation this table does not know yet: the body of the document's example.
        body = SPEC["paths"][path][method].get("requestBody")
        if body:
            for media in resolve(SPEC, body).get("content", {}).values():
                example = media.get("example", resolve(SPEC, media.get("schema", {})).get("example"))
                if example is not None:
                    kw["json"] = example
                    break
    return real, kw


def credentials(api, op):
    """Headers satisfying the operation's security: nothing when anonymous is allowed, else the
    admin token or an API key made with POST /admin/keys."""
    reqs = op.get("security", SPEC.get("security", []))
    if not reqs or {} in reqs:
        return {}
    names = {n for req in reqs for n in req}
    if "AdminToken" in names:
        return api.admin_headers()
    key = api.api_key()
    if key is None:
        pytest.fail("%s needs an API key, and POST /admin/keys did not make one" % op["operationId"])
    return {"X-Api-Key": key} if "ApiKeyHeader" in names else {"Authorization": "Bearer " + key}


def pick_media(content, ctype):
    base = ctype.split(";")[0].strip().lower()
    if base in content:
        return base, content[base]
    major = base.split("/")[0] + "/*"
    if major in content:
        return major, content[major]
    if "*/*" in content:
        return "*/*", content["*/*"]
    return None, None


def check_answer(method, path, op, r, validator):
    where = "%s %s -> %s %d" % (method.upper(), path, r.request.path_url, r.status_code)
    print(where)
    text = r.text[:1500]
    if r.status_code == 404:
        try:
            err = r.json().get("error")
        except ValueError:
            err = None
        if isinstance(err, dict) and err.get("type") == "not_found" and \
                str(err.get("message", "")).startswith("no route for"):
            pytest.fail("%s: the server has no route for this documented operation: %s" % (where, text))
    assert r.status_code != 405, "%s: method not allowed (Allow: %s): %s" % (where, r.headers.get("Allow"), text)
    responses = op.get("responses", {})
    code = str(r.status_code)
    assert code in responses, "%s: status %s is not documented for %s (documented: %s): %s" % (
        where, code, op["operationId"], ", ".join(sorted(k for k in responses if k != "default")), text)
    resp = resolve(SPEC, responses[code])
    for name, header in resp.get("headers", {}).items():
        header = resolve(SPEC, header)
        if header.get("required"):
            assert name in r.headers, "%s: documented required header %s is missing (headers: %s)" % (
                where, name, dict(r.headers))
    content = resp.get("content")
    if not content:
        return
    ctype = r.headers.get("Content-Type", "")
    chosen, media = pick_media(content, ctype)
    assert media is not None, "%s: Content-Type %r is not documented (documented: %s)" % (
        where, ctype, ", ".join(content))
    schema = media.get("schema")
    if schema and "json" in ctype.lower():
        try:
            body = r.json()
        except ValueError:
            pytest.fail("%s: Content-Type %s but the body is not JSON: %s" % (where, ctype, text))
        errors = validator.errors(schema, body)
        assert not errors, "%s: the body does not match the documented schema (%s):\n%s\nbody: %s" % (
            where, chosen, describe_errors(errors), text)


@pytest.fixture(scope="module")
def validator():
    return BodyValidator(SPEC)


@pytest.mark.parametrize("method,path", [(m, p) for m, p, _ in OPERATIONS],
                         ids=["%s %s" % (m.upper(), p) for m, p, _ in OPERATIONS])
def test_documented_operation_answers(api, validator, method, path):
    op = SPEC["paths"][path][method]
    if (method, path) == ("post", "/admin/models/{name}/rollback"):
        # Something to roll back from, whatever ran before.
        api.server.post("/admin/models/tiny_mlp/promote", json={"version": "2.0.0"}, headers=api.admin_headers())
    real, kw = request_for(api, method, path)
    headers = dict(kw.pop("headers", {}))
    headers.update(credentials(api, op))
    r = api.server.request(method.upper(), real, headers=headers, **kw)
    check_answer(method, path, op, r, validator)


def test_extra_route_answers_as_its_function(api, validator):
    """A configured `routes:` path runs its function: the answer of POST .../invoke."""
    r = api.server.post(EXTRA_ROUTE, json={"inputs": ROW})
    check_answer("post", "/v1/functions/{name}/invoke", SPEC["paths"]["/v1/functions/{name}/invoke"]["post"], r,
                 validator)
    assert r.status_code == 200, r.text


ADMIN_OPERATIONS = [(m, p) for m, p, op in OPERATIONS
                    if any("AdminToken" in req for req in op.get("security", SPEC.get("security", [])))]


@pytest.mark.parametrize("method,path", ADMIN_OPERATIONS, ids=["%s %s" % (m.upper(), p) for m, p in ADMIN_OPERATIONS])
@pytest.mark.parametrize("token", [None, "wrong-token"], ids=["no token", "wrong token"])
def test_admin_operations_refuse_callers_without_the_admin_token(api, validator, method, path, token):
    op = SPEC["paths"][path][method]
    real = path.replace("{name}", "tiny_mlp").replace("{id}", "0" * 32)
    headers = {} if token is None else {"Authorization": "Bearer " + token}
    kw = {"json": {"version": "1.0.0", "plan": KEY_PLAN}} if method == "post" else {}
    r = api.server.request(method.upper(), real, headers=headers, **kw)
    assert r.status_code == 401, "%s %s with %s: expected 401, got %d: %s" % (
        method.upper(), real, token or "no token", r.status_code, r.text[:500])
    check_answer(method, path, op, r, validator)
    assert r.headers.get("WWW-Authenticate", "").lower().startswith("bearer"), r.headers
