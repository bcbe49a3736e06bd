"""A corpus of malformed and hostile HTTP requests, as data, with the answer each must get.

Run by test_hostile.py (CASES, STALL_CASES, CONTROLS) and test_hostile_auth.py (AUTH_CASES,
AUTH_CONTROLS). Every case goes out byte for byte on a fresh raw socket (rawhttp.exchange);
after it a good request on a new connection must still get 200.

The expected answers are the gateway spec's:
- default limits: request head 60 KiB and 100 header fields (431 beyond), request target 8 KiB
  (414), body 6 MiB (413), the whole request received within 10 s (408), JSON nesting 64
  (400 beyond; 64 itself is accepted);
- malformed HTTP framing → 400 and the connection closed (``closes=True``: the response must be
  followed by EOF, and nothing else — a second response means a smuggled request was served);
- unknown route, function or model → 404; a traversal attempt in a name → 404 or 400;
- known path, wrong method → 405 with ``Allow``;
- errors are {"error": {"type", "message", "request_id"}} (``X-Request-Id`` equal to the body's
  id), except on the Open Inference Protocol routes (/v2/...: {"error": "message"}) and the
  Lambda Invoke API (/2015-03-31/...: {"Type", "message"});
- auth (test_hostile_auth.py): a forged, expired or otherwise invalid JWT → 401 with
  WWW-Authenticate; a missing or unknown API key → 401; an admin route without the admin token,
  or with a wrong one → 401.

Where the RFCs leave a server a choice (identical duplicate Content-Length values may be merged
or refused, a bare LF line ending may be accepted, absolute-form targets should be accepted) a
case accepts each allowed answer; `note` says why. Two choices are made on purpose, the strict
way (as llhttp does by default): obs-fold line folding is refused with 400 (RFC 9112 5.2 allows
that or unfolding), and so is a Transfer-Encoding that is not exactly `chunked` (empty, quoted,
with parameters, listed twice) — anything a front end might read differently.
The ideas come from llhttp's test/request/*.md and aws/http-desync-guardian's tests/*.yaml;
the cases are our own, aimed at pilotlight's routes.

A Case's ``send`` is bytes, a list of bytes (sent in order), or a callable(ctx) returning
either (ctx: a dict of run-time values such as minted tokens).
"""

import base64
import gzip
import json
from dataclasses import dataclass

import rawhttp

from support import json_bytes, tiny_rows

# --------------------------------------------------------------------------------------
# The case record
# --------------------------------------------------------------------------------------
V1_APP_ERRORS = ("invalid_json", "invalid_input")
# Error types that mean a request got past the HTTP layer (its body was parsed, its route
# looked up): a framing case answered with one of these was mis-framed, not refused.
APP_ERROR_TYPES = ("invalid_json", "invalid_input", "not_found", "method_not_allowed")


@dataclass(frozen=True)
class Case:
    name: str
    category: str
    send: object                 # bytes | [bytes, ...] | callable(ctx) -> bytes | [bytes, ...]
    status: object               # int, or a tuple of acceptable statuses
    etype: object = None         # expected error "type" (str or tuple) for /v1-style errors
    closes: bool = False         # framing error: the connection must be closed after the answer
    half_close: bool = False     # shutdown(SHUT_WR) after sending (the client gave up sending)
    allow: str = None            # 405: the Allow header must name this method
    shape: str = "auto"          # error body: "v1" | "v2" | "aws" | None (unchecked) | "auto"
    www_auth: bool = False       # 401: WWW-Authenticate required
    head: bool = False           # a HEAD request: the answer has no body
    timeout: float = 5.0         # seconds to wait for the answer
    gap: float = 0.0             # seconds between the parts of `send`
    note: str = ""

    @property
    def id(self):
        return "%s-%s" % (self.category, self.name)

    @property
    def statuses(self):
        return self.status if isinstance(self.status, tuple) else (self.status,)

    def bytes_for(self, ctx):
        s = self.send(ctx) if callable(self.send) else self.send
        return [s] if isinstance(s, (bytes, bytearray)) else list(s)

    def error_shape(self, sent_first_part):
        if self.shape != "auto":
            return self.shape
        if self.closes or self.statuses[0] in (408, 413, 414, 431):
            return "v1"  # refused by the HTTP layer, before any route
        line = sent_first_part.split(b"\r\n", 1)[0]
        parts = line.split(b" ")
        target = parts[1] if len(parts) > 1 else b""
        if target.startswith(b"/v2"):
            return "v2"
        if target.startswith(b"/2015-03-31/"):
            return "aws"
        return "v1"


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------
HOST = b"Host: 127.0.0.1\r\n"
JSON_CT = b"Content-Type: application/json\r\n"
INVOKE = b"/v1/functions/tiny_mlp/invoke"
GOOD = json_bytes({"inputs": tiny_rows(1)})                 # a valid tiny_mlp body
# A complete second request riding behind a hostile one: if the server answers it, the first
# request's framing was misread (request smuggling).
SMUGGLED = b"GET /v1/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
MAX_BODY = 6 * 1024 * 1024
MAX_HEAD = 60 * 1024
MAX_FIELDS = 100
MAX_TARGET = 8 * 1024
# test_hostile.py's server runs with this admin token (PILOTLIGHT_ADMIN_TOKEN): admin requests in
# CASES carry it, so they reach the name and version checks instead of stopping at a 401.
ADMIN_TOKEN = "hostile-corpus-admin-token-5f1d2c"
ADMIN = b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\n"


def chunked(body, size_line=None):
    """`body` as one chunk and the last chunk; `size_line` replaces the chunk-size line."""
    line = size_line if size_line is not None else b"%x" % len(body)
    return line + b"\r\n" + body + b"\r\n0\r\n\r\n"


def post(target=INVOKE, fields=b"", body=GOOD, version=b"HTTP/1.1", cl=True, ctype=True):
    """A POST with `fields` (raw header lines, each ending in CRLF) added after Host and
    Content-Type; Content-Length of `body` unless cl=False."""
    head = b"POST " + target + b" " + version + b"\r\n" + HOST + (JSON_CT if ctype else b"") + fields
    if cl:
        head += b"Content-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


def get(target=b"/v1/health", fields=b"", method=b"GET", version=b"HTTP/1.1"):
    return method + b" " + target + b" " + version + b"\r\n" + HOST + fields + b"\r\n"


def te_post(fields, body, target=INVOKE, version=b"HTTP/1.1"):
    """A POST whose framing headers are exactly `fields` (no Content-Length added)."""
    return post(target, fields, body, version=version, cl=False)


def invoke(body, function=b"tiny_mlp"):
    return post(b"/v1/functions/" + function + b"/invoke", body=body)


def head_of_size(size, target=b"/v1/health"):
    """A GET of exactly `size` bytes (request line + fields + CRLFCRLF), padded in one field."""
    base = b"GET " + target + b" HTTP/1.1\r\n" + HOST + b"X-Pad: \r\n\r\n"
    assert size >= len(base)
    return base.replace(b"X-Pad: ", b"X-Pad: " + b"a" * (size - len(base)))


def head_with_fields(n):
    """A GET with exactly `n` header fields in all (Host included)."""
    return (b"GET /v1/health HTTP/1.1\r\n" + HOST
            + b"".join(b"X-F%d: v\r\n" % i for i in range(n - 1)) + b"\r\n")


def target_of_length(n, prefix=b"/v1/health?pad="):
    assert n >= len(prefix)
    return prefix + b"a" * (n - len(prefix))


def padded(body, size):
    assert len(body) <= size
    return body + b" " * (size - len(body))


def nested(depth, leaf=b"0"):
    return b"[" * depth + leaf + b"]" * depth


def with_pad(depth):
    """A valid tiny_mlp body whose deepest value is `depth` levels down (the root object is
    level 1): {"inputs": ..., "pad": [[...]]} with depth-1 arrays in "pad"."""
    return GOOD[:-1] + b',"pad":' + nested(depth - 1) + b"}"


ALL_DTYPES = {"f32": [[1.5, -2]], "f64": [[0.25, 1e10]], "i32": [[1, 2]], "i64": [[3, 4]],
              "b": [[True, False]], "u8": [[0, 255]], "i8": [[-128, 127]]}


def all_dtypes_with(name, raw_value):
    """An all_dtypes body with input `name` replaced by the raw JSON text `raw_value`."""
    parts = []
    for k, v in ALL_DTYPES.items():
        parts.append(b'"%s":%s' % (k.encode(), raw_value if k == name else json_bytes(v)))
    return post(b"/v1/functions/all_dtypes/invoke", body=b'{"inputs":{' + b",".join(parts) + b"}}")


def multi_input(features=b"[[1,2,3,4]]", ids=b"[[1,2]]", extra=b""):
    return post(b"/v1/functions/multi_input/invoke",
                body=b'{"inputs":{"features":' + features + b',"ids":' + ids + extra + b"}}")


F16 = b"[" + b",".join([b"0.5"] * 16) + b"]"


def tiny_body(rows_json):
    return invoke(b'{"inputs":' + rows_json + b"}")


# Open Inference Protocol v2
def v2_input(name=b"x", shape=b"[1,16]", datatype=b'"FP32"', data=F16, extra=b""):
    return (b'{"name":"' + name + b'","shape":' + shape + b',"datatype":' + datatype
            + b',"data":' + data + extra + b"}")


def v2_infer(inputs=None, model=b"tiny_mlp", extra=b"", fields=b"", body=None, version=None):
    target = b"/v2/models/" + model + (b"/versions/" + version if version else b"") + b"/infer"
    if body is None:
        body = b'{"inputs":[' + (inputs if inputs is not None else v2_input()) + b"]" + extra + b"}"
    return post(target, fields, body)


V2_GOOD_BODY = b'{"inputs":[' + v2_input() + b"]}"
V2_BINARY_JSON = b'{"inputs":[{"name":"x","shape":[1,16],"datatype":"FP32","parameters":{"binary_data_size":64}}]}'


def v2_binary(tail, json_part=V2_BINARY_JSON):
    """A v2 request with the binary tensor extension: `json_part`, then the raw `tail`."""
    return v2_infer(body=json_part + tail,
                    fields=b"Inference-Header-Content-Length: %d\r\n" % len(json_part))


def v2_all_dtypes(name, datatype, data):
    """A v2 all_dtypes request with input `name` given as `datatype` / raw `data`."""
    specs = [("f32", "FP32", "[1.5,-2]"), ("f64", "FP64", "[0.25,1e10]"), ("i32", "INT32", "[1,2]"),
             ("i64", "INT64", "[3,4]"), ("b", "BOOL", "[true,false]"), ("u8", "UINT8", "[0,255]"),
             ("i8", "INT8", "[-128,127]")]
    ins = []
    for n, t, d in specs:
        if n == name:
            t, d = datatype, data
        ins.append('{"name":"%s","shape":[1,2],"datatype":"%s","data":%s}' % (n, t, d))
    return v2_infer(body=('{"inputs":[' + ",".join(ins) + "]}").encode(), model=b"all_dtypes")


# A TLS 1.2 ClientHello's first bytes, as a TLS client sends them to a plain-HTTP port.
TLS_CLIENT_HELLO = bytes.fromhex(
    "16030100c4010000c00303") + bytes(range(32)) + bytes.fromhex(
    "000020c02bc02fc02cc030cca9cca8c013c014009c009d002f0035000a0100007700000014001200000f"
    "6578616d706c652e6578616d706c65")


# --------------------------------------------------------------------------------------
# Request smuggling: conflicting or ambiguous message framing
# --------------------------------------------------------------------------------------
CH = chunked(GOOD)  # the good body, chunked
N = len(GOOD)


def _smuggle(name, fields, body, status=400, note="", **kw):
    return Case(name, "smuggling", te_post(fields, body + SMUGGLED, **kw), status, closes=True, note=note)


def _cl(name, value, status=400, note=""):
    """Content-Length with a malformed `value`; the good body (and a smuggled request) follow."""
    return _smuggle(name, b"Content-Length: " + value + b"\r\n", GOOD, status, note)


SMUGGLING = [
    _smuggle("cl_then_te_chunked", b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(CH), CH,
             note="RFC 9112 6.1: both present is an attack signal; we refuse it"),
    _smuggle("te_chunked_then_cl", b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n" % len(CH), CH),
    _smuggle("cl_zero_and_te_chunked", b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", CH),
    _smuggle("te_chunked_and_short_cl", b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", CH,
             note="TE.CL desync: CL covers only the chunk-size line"),
    _smuggle("te_chunked_and_long_cl", b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n"
             % (len(CH) + len(SMUGGLED)), CH, note="CL.TE desync: CL swallows the smuggled request"),
    _smuggle("duplicate_cl_differing", b"Content-Length: %d\r\nContent-Length: %d\r\n" % (N, N + 5), GOOD),
    _smuggle("duplicate_cl_differing_case", b"Content-Length: %d\r\ncontent-LENGTH: %d\r\n" % (N + 5, N), GOOD),
    _smuggle("cl_list_differing", b"Content-Length: %d, %d\r\n" % (N, N + 5), GOOD),
    Case("duplicate_cl_identical", "smuggling",
         post(fields=b"Connection: close\r\nContent-Length: %d\r\n" % N), (200, 400),
         note="RFC 9110 8.6: identical duplicates may be merged or refused"),
    Case("cl_list_identical", "smuggling",
         te_post(b"Connection: close\r\nContent-Length: %d, %d\r\n" % (N, N), GOOD), (200, 400),
         note="RFC 9110 8.6: a list of identical values may be merged or refused"),
    _smuggle("te_chunked_identity", b"Transfer-Encoding: chunked, identity\r\nContent-Length: %d\r\n" % len(CH), CH,
             note="chunked not the final coding: RFC 9112 6.3 says 400 and close"),
    _smuggle("te_chunked_identity_no_cl", b"Transfer-Encoding: chunked, identity\r\n", CH),
    _smuggle("te_identity_chunked", b"Transfer-Encoding: identity, chunked\r\nContent-Length: %d\r\n" % len(CH), CH,
             (400, 501), note="'identity' is no longer a transfer coding: 400 (or 501 for an unknown coding)"),
    _smuggle("te_xchunked", b"Transfer-Encoding: xchunked\r\nContent-Length: %d\r\n" % len(CH), CH),
    _smuggle("te_chunked_twice_fields", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", CH,
             note="chunked applied twice (RFC 9112 6.1 forbids)"),
    _smuggle("te_chunked_chunked_list", b"Transfer-Encoding: chunked, chunked\r\n", CH),
    _smuggle("te_chunked_then_identity_fields", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"
             b"Content-Length: %d\r\n" % len(CH), CH),
    _smuggle("te_space_before_colon", b"Transfer-Encoding : chunked\r\nContent-Length: %d\r\n" % len(CH), CH,
             note="RFC 9112 5.1: whitespace before the colon MUST be answered with 400"),
    _smuggle("te_obs_fold_value", b"Transfer-Encoding:\r\n chunked\r\nContent-Length: %d\r\n" % len(CH), CH),
    _smuggle("te_obs_fold_hidden_line", b"X-Padding: a\r\n Transfer-Encoding: chunked\r\nContent-Length: %d\r\n"
             % len(CH), CH, note="a folded line that reads as a TE field to a naive front end"),
    _smuggle("te_vertical_tab", b"Transfer-Encoding:\x0bchunked\r\nContent-Length: %d\r\n" % len(CH), CH),
    _smuggle("te_form_feed", b"Transfer-Encoding: \x0cchunked\r\nContent-Length: %d\r\n" % len(CH), CH),
    _smuggle("te_nul_after_value", b"Transfer-Encoding: chunked\x00\r\nContent-Length: %d\r\n" % len(CH), CH),
    _smuggle("te_quoted", b'Transfer-Encoding: "chunked"\r\nContent-Length: %d\r\n' % len(CH), CH),
    _smuggle("te_empty_with_cl", b"Transfer-Encoding:\r\nContent-Length: %d\r\n" % N, GOOD,
             note="llhttp: empty Transfer-Encoding is an error"),
    _smuggle("te_comma_only", b"Transfer-Encoding: ,\r\nContent-Length: %d\r\n" % N, GOOD),
    _smuggle("te_chunked_with_param", b"Transfer-Encoding: chunked;q=1\r\n", CH,
             note="chunked takes no parameters; parsers disagree on whether this is chunked"),
    _smuggle("te_leading_space_first_field", b" Transfer-Encoding: chunked\r\nContent-Length: %d\r\n" % len(CH), CH,
             note="whitespace before the first field line (RFC 9112 2.2)"),
    _smuggle("te_in_http10_with_cl", b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n" % len(CH), CH,
             version=b"HTTP/1.0", note="RFC 9112 6.1: TE in HTTP/1.0 means faulty framing"),
    _smuggle("te_crlf_split_name", b"Transfer-\r\nEncoding: chunked\r\nContent-Length: %d\r\n" % len(CH), CH),
    Case("cl_space_before_colon", "smuggling",
         te_post(b"Content-Length : %d\r\n" % N, GOOD + SMUGGLED), 400, closes=True,
         note="RFC 9112 5.1: 'Content-Length : 5' MUST be refused with 400"),
    _cl("cl_plus_sign", b"+%d" % N),
    _cl("cl_minus_sign", b"-%d" % N),
    _cl("cl_negative_one", b"-1"),
    _cl("cl_hex", b"0x%x" % N),
    _cl("cl_leading_junk", b"x%d" % N),
    _cl("cl_trailing_junk", b"%da" % N),
    _cl("cl_decimal_point", b"%d.0" % N),
    _cl("cl_exponent", b"%de0" % N),
    _cl("cl_inner_space", b"%d %d" % (N // 10, N % 10)),
    _cl("cl_empty", b""),
    _cl("cl_nul_after", b"%d\x00" % N),
    _cl("cl_vertical_tab_before", b"\x0b%d" % N),
    _cl("cl_fullwidth_digits", "".join(chr(0xFF10 + int(c)) for c in str(N)).encode("utf-8")),
    Case("cl_obs_fold", "smuggling", te_post(b"Content-Length:\r\n %d\r\n" % N, GOOD + SMUGGLED), 400, closes=True),
    _cl("cl_overflow_2_64", b"18446744073709551616", (400, 413),
        note="overflows uint64: refused as malformed (400) or too large (413), never wrapped"),
    _cl("cl_overflow_40_digits", b"9" * 40, (400, 413)),
]


# --------------------------------------------------------------------------------------
# Bad chunked bodies
# --------------------------------------------------------------------------------------
TE_CHUNKED = b"Transfer-Encoding: chunked\r\n"


def _chunk(name, body, status=400, note="", **kw):
    return Case(name, "chunking", te_post(TE_CHUNKED, body), status, closes=True, note=note, **kw)


CHUNKING = [
    _chunk("size_not_hex", chunked(GOOD, b"zz")),
    _chunk("size_0x_prefix", chunked(GOOD, b"0x%x" % N)),
    _chunk("size_negative", chunked(GOOD, b"-%x" % N)),
    _chunk("size_plus", chunked(GOOD, b"+%x" % N)),
    _chunk("size_leading_space", chunked(GOOD, b" %x" % N)),
    _chunk("size_junk_without_semicolon", chunked(GOOD, b"%x junk" % N), note="llhttp: no ';' before extension"),
    _chunk("size_empty_line", chunked(GOOD, b"")),
    _chunk("size_overflow_80_bits", chunked(GOOD, b"1" + b"0" * 20), (400, 413),
           note="must not wrap to a small size"),
    _chunk("size_u64_max", chunked(GOOD, b"f" * 16), (400, 413)),
    _chunk("size_overflow_wraps_to_small", chunked(GOOD, b"1" + b"0" * 15 + b"%x" % N), (400, 413),
           note="2^64 + len: a parser that wraps reads len bytes"),
    _chunk("size_over_body_limit", b"%x\r\n" % (MAX_BODY + 1) + GOOD, 413,
           note="a chunk declared bigger than server.max_body_bytes is refused before it arrives"),
    _chunk("data_longer_than_size", b"2\r\n" + GOOD + b"\r\n0\r\n\r\n"),
    _chunk("data_shorter_than_size", b"%x\r\n" % (N + 3) + GOOD + b"\r\n0\r\n\r\n" + b"X\r\n"),
    _chunk("missing_crlf_after_data", b"%x\r\n" % N + GOOD + b"0\r\n\r\n"),
    _chunk("missing_crlf_after_size", b"%x" % N + GOOD + b"\r\n0\r\n\r\n"),
    _chunk("bare_lf_framing", b"%x\n" % N + GOOD + b"\n0\n\n", note="LF-only chunk lines"),
    _chunk("bare_cr_after_size", b"%x\r" % N + GOOD + b"\r\n0\r\n\r\n"),
    _chunk("extension_without_name", chunked(GOOD, b"%x;" % N), note="llhttp: ';' with no extension"),
    _chunk("extension_nul", chunked(GOOD, b"%x;a\x00b" % N)),
    _chunk("extension_unterminated_quote", chunked(GOOD, b'%x;a="abc' % N)),
    _chunk("extension_bare_cr", chunked(GOOD, b"%x;a=b\rc" % N)),
    _chunk("extension_100k", chunked(GOOD, b"%x;a=" % N + b"b" * 100000), (400, 413, 431),
           note="an unbounded chunk extension is a memory DoS"),
    _chunk("last_chunk_bad_trailer", b"%x\r\n" % N + GOOD + b"\r\n0\r\nBad Trailer\r\n\r\n"),
    _chunk("last_chunk_trailer_nul", b"%x\r\n" % N + GOOD + b"\r\n0\r\nX-T: a\x00b\r\n\r\n"),
    _chunk("missing_last_chunk_then_close", b"%x\r\n" % N + GOOD + b"\r\n", half_close=True,
           note="the client half-closes before the last chunk: 400, not a silent close"),
    _chunk("truncated_chunk_then_close", b"%x\r\n" % N + GOOD[:10], half_close=True),
    _chunk("no_chunks_then_close", b"", half_close=True),
    Case("cl_body_truncated_then_close", "chunking", post(fields=b"", body=GOOD)[:-10], 400, closes=True,
         half_close=True, note="Content-Length promises more than arrives before the client half-closes"),
]


# --------------------------------------------------------------------------------------
# Bad request lines
# --------------------------------------------------------------------------------------
def _line(name, raw, status=400, closes=True, note="", **kw):
    return Case(name, "request_line", raw, status, closes=closes, note=note, **kw)


VERSION_STATUS = (400, 505)  # RFC 9110 15.6.6 allows 505 for an unsupported major version
REQUEST_LINE = [
    _line("missing_version", b"GET /v1/health\r\n" + HOST + b"\r\n", note="HTTP/0.9-style line"),
    _line("http2_preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", VERSION_STATUS, note="h2 prior knowledge"),
    _line("version_2_0", get(version=b"HTTP/2.0"), VERSION_STATUS),
    _line("version_3_0", get(version=b"HTTP/3.0"), VERSION_STATUS),
    _line("version_lowercase", get(version=b"http/1.1")),
    _line("version_1_10", get(version=b"HTTP/1.10")),
    _line("version_01_1", get(version=b"HTTP/01.1")),
    _line("version_letters", get(version=b"HTTP/1.x")),
    _line("version_no_slash", get(version=b"HTTP1.1")),
    _line("version_trailing_space", get(version=b"HTTP/1.1 ")),
    _line("extra_token", get(version=b"HTTP/1.1 extra")),
    _line("double_space_after_method", b"GET  /v1/health HTTP/1.1\r\n" + HOST + b"\r\n"),
    _line("space_in_target", get(b"/v1/he alth")),
    _line("tab_in_target", get(b"/v1/he\talth")),
    _line("tab_as_separator", b"GET\t/v1/health HTTP/1.1\r\n" + HOST + b"\r\n"),
    _line("nul_in_target", get(b"/v1/hea\x00lth")),
    _line("ctl_in_target", get(b"/v1/hea\x01lth")),
    _line("del_in_target", get(b"/v1/hea\x7flth")),
    _line("bare_cr_ends_request_line", b"GET /v1/health HTTP/1.1\r" + HOST + b"\r\n"),
    _line("empty_target", b"GET  HTTP/1.1\r\n" + HOST + b"\r\n"),
    _line("leading_space", b" " + get()),
    _line("method_invalid_char", get(method=b"GE(T")),
    _line("method_nul", get(method=b"GE\x00T")),
    _line("method_non_ascii", get(method=b"G\xc3\x89T")),
    _line("tls_client_hello", TLS_CLIENT_HELLO, note="TLS spoken to the plain-HTTP port"),
    _line("ssh_banner", b"SSH-2.0-OpenSSH_9.2\r\n\r\n"),
    _line("binary_garbage", bytes(range(256)) + b"\r\n\r\n"),
    _line("target_without_slash", get(b"v1/health"), (400, 404), closes=False),
    _line("non_ascii_target", post(b"/v1/functions/\xff\xfe/invoke"), (400, 404), closes=False),
    _line("absolute_form", get(b"http://127.0.0.1/v1/health"), (200, 400, 404), closes=False,
          note="RFC 9112 3.2.2: a server MUST accept absolute-form; refusing it is tolerated"),
    _line("absolute_form_other_host", get(b"http://evil.example/v1/health"), (200, 400, 404), closes=False),
    _line("asterisk_form_get", get(b"*"), (400, 404), closes=False),
    _line("authority_form_connect", get(b"127.0.0.1:1", method=b"CONNECT"), (400, 404, 405), closes=False),
    _line("lowercase_method", get(method=b"get"), (400, 405), closes=False,
          note="methods are case-sensitive: 'get' is an unknown method (405) or refused (400)"),
    _line("lf_only_line_endings", b"GET /v1/health HTTP/1.1\nHost: 127.0.0.1\n\n", (200, 400), closes=False,
          note="RFC 9112 2.2: a recipient MAY accept a bare LF"),
]


# --------------------------------------------------------------------------------------
# Bad header fields
# --------------------------------------------------------------------------------------
def _field(name, line, status=400, closes=True, note=""):
    """GET /v1/health with the raw field `line` (CRLF added unless it has its own ending)."""
    raw = line if line.endswith(b"\n") else line + b"\r\n"
    return Case(name, "headers", get(fields=raw), status, closes=closes, note=note)


HEADERS = [
    _field("no_colon", b"X-Foo bar"),
    _field("space_before_colon", b"X-Foo : bar", note="RFC 9112 5.1: MUST answer 400"),
    _field("tab_before_colon", b"X-Foo\t: bar"),
    _field("empty_name", b": bar"),
    _field("space_in_name", b"X Foo: bar"),
    _field("paren_in_name", b"X(Foo): bar"),
    _field("at_in_name", b"Fo@: bar"),
    _field("nul_in_name", b"X\x00Foo: bar"),
    _field("del_in_name", b"\x7fX-Foo: bar"),
    _field("non_ascii_name", b"X-F\xc3\xa9: bar"),
    _field("nul_in_value", b"X-Foo: a\x00b"),
    _field("nul_at_value_start", b"X-Foo: \x00ab"),
    _field("bare_cr_in_value", b"X-Foo: a\rb"),
    _field("fields_separated_by_cr", b"X-Foo: 1\rX-Bar: 2", note="llhttp: headers separated by CR"),
    _field("bare_lf_in_value", b"X-Foo: a\nTransfer-Encoding: chunked",
           note="desync-guardian: a bare LF hiding a second field"),
    _field("ctl_in_value", b"X-Foo: a\x01b"),
    _field("escape_in_value", b"X-Foo: a\x1b[31mred"),
    _field("del_in_value", b"X-Foo: a\x7fb"),
    _field("cr_then_garbage_line", b"X-Foo: a\r\n\rZGET /evil HTTP/1.1",
           note="llhttp: headers separated by dummy characters"),
    _field("whitespace_only_line", b"   ", note="an empty obs-fold line"),
    _field("obs_fold_benign", b"X-Foo: a\r\n b",
           note="RFC 9112 5.2 lets a server unfold or refuse obs-fold with 400; we refuse (as llhttp does)"),
    Case("leading_space_first_field", "headers", b"GET /v1/health HTTP/1.1\r\n Host: 127.0.0.1\r\n\r\n", 400,
         closes=True, note="llhttp: unexpected space after start line"),
    Case("duplicate_host_differing", "headers",
         b"GET /v1/health HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n", 400, closes=True,
         note="RFC 9112 3.2: more than one Host MUST get 400"),
    Case("host_with_space", "headers", b"GET /v1/health HTTP/1.1\r\nHost: a b\r\n\r\n", 400, closes=True,
         note="RFC 9112 3.2: an invalid Host value MUST get 400"),
]


# --------------------------------------------------------------------------------------
# Size limits: 431 (head, fields), 414 (target), 413 (body)
# --------------------------------------------------------------------------------------
def _limit(name, raw, status, note="", **kw):
    # 431 and 413 refuse bytes the server did not read: the connection must close. A 414 may
    # come after the whole head was read, so keeping the connection is allowed there.
    kw.setdefault("closes", 414 not in (status if isinstance(status, tuple) else (status,)))
    return Case(name, "limits", raw, status, note=note, **kw)


LIMITS = [
    _limit("head_one_byte_over_60k", head_of_size(MAX_HEAD + 1), 431, etype="headers_too_large"),
    _limit("head_128k", head_of_size(128 * 1024), 431, etype="headers_too_large"),
    _limit("head_1m", head_of_size(1024 * 1024), 431, etype="headers_too_large", timeout=10),
    _limit("one_field_value_70k", get(fields=b"X-Big: " + b"v" * (70 * 1024) + b"\r\n"), 431,
           etype="headers_too_large"),
    _limit("field_name_70k", get(fields=b"X" * (70 * 1024) + b": v\r\n"), 431, etype="headers_too_large"),
    _limit("fields_101", head_with_fields(MAX_FIELDS + 1), 431, etype="headers_too_large"),
    _limit("fields_1000", head_with_fields(1000), 431, etype="headers_too_large"),
    _limit("fields_5000_empty", b"GET /v1/health HTTP/1.1\r\n" + HOST + b"a:\r\n" * 5000 + b"\r\n", 431,
           etype="headers_too_large"),
    _limit("target_one_byte_over_8k", get(target_of_length(MAX_TARGET + 1)), 414),
    _limit("target_16k", get(target_of_length(16 * 1024)), 414),
    _limit("target_50k", get(target_of_length(50 * 1024)), 414),
    _limit("target_long_path", get(b"/v1/" + b"a/" * 5000), 414),
    _limit("target_long_function_name", post(b"/v1/functions/" + b"f" * 9000 + b"/invoke"), 414),
    _limit("target_100k", get(target_of_length(100 * 1024)), (414, 431), note="over both limits"),
    _limit("body_cl_one_byte_over_6m_head_only", post(fields=b"Content-Length: %d\r\n" % (MAX_BODY + 1),
                                                      body=b"", cl=False), 413, etype="payload_too_large",
           note="refused from Content-Length alone, before the body"),
    _limit("body_cl_1tb", post(fields=b"Content-Length: %d\r\n" % (1 << 40), body=b"", cl=False), 413,
           etype="payload_too_large"),
    _limit("body_cl_int64_max", post(fields=b"Content-Length: 9223372036854775807\r\n", body=b"", cl=False),
           413, etype="payload_too_large"),
    _limit("body_one_byte_over_6m_sent", post(body=padded(GOOD, MAX_BODY + 1)), 413, etype="payload_too_large",
           timeout=20),
    _limit("body_chunked_over_6m", te_post(TE_CHUNKED, b"".join(
        b"%x\r\n" % (1 << 20) + b" " * (1 << 20) + b"\r\n" for _ in range(7)) + b"0\r\n\r\n"), 413,
        etype="payload_too_large", timeout=20),
    _limit("body_expect_100_over_limit", post(fields=b"Expect: 100-continue\r\nContent-Length: %d\r\n"
                                                     % (MAX_BODY * 2), body=b"", cl=False), 413,
           etype="payload_too_large"),
    _limit("body_over_limit_v2", post(b"/v2/models/tiny_mlp/infer",
                                      fields=b"Content-Length: %d\r\n" % (MAX_BODY + 1), body=b"", cl=False),
           413, shape=None),
    _limit("body_over_limit_lambda", post(b"/2015-03-31/functions/tiny_mlp/invocations",
                                          fields=b"Content-Length: %d\r\n" % (MAX_BODY + 1), body=b"", cl=False),
           413, shape=None),
]


# --------------------------------------------------------------------------------------
# Methods and routes: 405 with Allow, 404
# --------------------------------------------------------------------------------------
def _method(name, raw, status=405, allow=None, note="", **kw):
    return Case(name, "methods", raw, status, etype="method_not_allowed" if status == 405 else "not_found",
                allow=allow, note=note, **kw)


METHODS = [
    _method("get_invoke", get(INVOKE), allow="POST"),
    _method("put_infer", post(b"/v1/infer").replace(b"POST", b"PUT", 1), allow="POST"),
    _method("delete_batch", get(b"/v1/batch", method=b"DELETE"), allow="POST"),
    _method("post_health", post(b"/v1/health", body=b"{}"), allow="GET"),
    _method("post_metrics", post(b"/metrics", body=b"{}"), allow="GET"),
    _method("get_promote", get(b"/admin/models/tiny_mlp/promote", ADMIN), allow="POST"),
    _method("get_rollback", get(b"/admin/models/tiny_mlp/rollback", ADMIN), allow="POST"),
    _method("get_invoke_async", get(b"/v1/functions/tiny_mlp/invoke-async"), allow="POST"),
    _method("get_lambda_invocations", get(b"/2015-03-31/functions/tiny_mlp/invocations"), allow="POST",
            shape=None),
    _method("patch_events", get(b"/v1/events", ADMIN, method=b"PATCH"), allow="GET"),
    _method("head_invoke", get(INVOKE, method=b"HEAD"), allow="POST", head=True),
    _method("unknown_method_on_health", get(method=b"FOO"), allow="GET"),
    _method("unknown_method_on_invoke", post().replace(b"POST", b"BREW", 1), allow="POST"),
    _method("trace_health", get(method=b"TRACE"), allow="GET", note="TRACE must not echo the request"),
    _method("delete_v2_model", get(b"/v2/models/tiny_mlp", method=b"DELETE"), allow="GET"),
    _method("get_v2_infer", get(b"/v2/models/tiny_mlp/infer"), allow="POST"),
    _method("post_v2_health_live", post(b"/v2/health/live", body=b"{}"), allow="GET"),
    _method("unknown_method_unknown_route", get(b"/no/such/route", method=b"PROPFIND"), 404),
    _method("unknown_route_v1", get(b"/v1/no_such_route"), 404),
    _method("unknown_route_root", get(b"/"), 404),
    _method("empty_function_name", post(b"/v1/functions//invoke"), 404),
    _method("functions_prefix_only", post(b"/v1/functions/"), 404),
    _method("subpath_of_model_function", post(b"/v1/functions/tiny_mlp/invoke/extra"), 404),
    _method("uppercase_route", get(b"/V1/HEALTH"), 404),
    _method("uppercase_invoke", post(b"/v1/functions/tiny_mlp/INVOKE"), 404),
    _method("unknown_function", post(b"/v1/functions/no_such_function/invoke"), 404),
    _method("unknown_model_infer", post(b"/v1/infer?model=no_such_model"), 404),
    _method("unknown_function_lambda", post(b"/2015-03-31/functions/no_such_function/invocations"), 404),
]


# --------------------------------------------------------------------------------------
# Path traversal and odd names: 404, or 400 (an invalid name) — never a file, never another
# function's answer
# --------------------------------------------------------------------------------------
TRAVERSAL_STATUS = (400, 404)
PROMOTE_BODY = json_bytes({"version": "1.0.0"})


def _trav(name, raw, note=""):
    return Case(name, "traversal", raw, TRAVERSAL_STATUS, note=note)


def _fn(path_name, body=GOOD):
    return post(b"/v1/functions/" + path_name + b"/invoke", body=body)


def _promote(model, body=PROMOTE_BODY, action=b"promote"):
    return post(b"/admin/models/" + model + b"/" + action, ADMIN, body=body)


TRAVERSAL = [
    _trav("function_encoded_slashes", _fn(b"..%2f..%2fetc")),
    _trav("function_encoded_slashes_upper", _fn(b"..%2F..%2F..%2Fetc%2Fpasswd")),
    _trav("function_raw_dotdot", _fn(b"../../etc/passwd")),
    _trav("function_encoded_dots", _fn(b"%2e%2e")),
    _trav("function_encoded_dots_slashes", _fn(b"%2e%2e%2f%2e%2e%2fmodels%2ftiny_mlp")),
    _trav("function_backslashes", _fn(b"..%5c..%5cetc")),
    _trav("function_overlong_utf8_dots", _fn(b"%c0%ae%c0%ae%c0%af")),
    _trav("function_encoded_nul", _fn(b"tiny_mlp%00")),
    _trav("function_encoded_nul_suffix", _fn(b"tiny_mlp%00.onnx")),
    _trav("function_double_encoded_nul", _fn(b"tiny_mlp%2500")),
    _trav("function_only_nul", _fn(b"%00")),
    _trav("function_reaches_sibling", _fn(b"tiny_mlp%2f..%2fdigits",
                                          body=json_bytes({"inputs": [[1] * 64]})),
          note="must not normalise to digits (the body is a valid digits request)"),
    _trav("function_absolute_path", _fn(b"%2fetc%2fpasswd")),
    _trav("function_dot", _fn(b".")),
    _trav("function_dotdot_plain", _fn(b"..")),
    _trav("infer_query_dotdot", post(b"/v1/infer?model=../../x")),
    _trav("infer_query_encoded", post(b"/v1/infer?model=..%2F..%2Fetc%2Fpasswd")),
    _trav("infer_query_nul", post(b"/v1/infer?model=tiny_mlp%00")),
    _trav("infer_query_absolute", post(b"/v1/infer?model=/etc/passwd")),
    _trav("infer_query_dots_only", post(b"/v1/infer?model=%2e%2e")),
    _trav("infer_x_model_header", post(b"/v1/infer", fields=b"X-Model: ../../etc/passwd\r\n")),
    _trav("infer_body_model", post(b"/v1/infer", body=json_bytes({"model": "../../etc/passwd",
                                                                  "inputs": tiny_rows(1)}))),
    _trav("infer_body_model_escaped_nul", post(b"/v1/infer", body=b'{"model":"tiny_mlp\\u0000","inputs":'
                                                + json_bytes(tiny_rows(1)) + b"}")),
    _trav("admin_promote_raw_dotdot", _promote(b"../x")),
    _trav("admin_promote_encoded", _promote(b"..%2f..%2fetc")),
    _trav("admin_promote_encoded_dots", _promote(b"%2e%2e")),
    _trav("admin_promote_nul", _promote(b"tiny_mlp%00")),
    _trav("admin_rollback_raw_dotdot", _promote(b"../../x", body=b"{}", action=b"rollback")),
    _trav("admin_promote_version_dotdot", _promote(b"tiny_mlp", json_bytes({"version": "../../../etc"}))),
    _trav("admin_promote_version_sibling", _promote(b"tiny_mlp", json_bytes(
        {"version": "1.0.0/../../digits/versions/1.0.0"}))),
    _trav("admin_promote_version_absolute", _promote(b"tiny_mlp", json_bytes({"version": "/etc/passwd"}))),
    _trav("admin_promote_version_nul", _promote(b"tiny_mlp", b'{"version":"1.0.0\\u0000"}')),
    _trav("v2_infer_encoded_slash", v2_infer(model=b"..%2f")),
    _trav("v2_infer_raw_dotdot", v2_infer(model=b"../../x")),
    _trav("v2_model_metadata_encoded", get(b"/v2/models/..%2f..%2fetc%2fpasswd")),
    _trav("v2_model_ready_encoded", get(b"/v2/models/%2e%2e/ready")),
    _trav("v2_version_traversal", v2_infer(version=b"..%2f..%2fdigits%2fversions%2f1.0.0")),
    _trav("v2_version_raw_dotdot", get(b"/v2/models/tiny_mlp/versions/../../digits")),
    _trav("v2_model_nul", v2_infer(model=b"tiny_mlp%00")),
    _trav("lambda_function_encoded", post(b"/2015-03-31/functions/..%2f..%2fetc/invocations")),
    _trav("lambda_qualifier_traversal", post(b"/2015-03-31/functions/tiny_mlp:..%2f..%2f1.0.0/invocations")),
    _trav("lambda_qualifier_param", post(b"/2015-03-31/functions/tiny_mlp/invocations?Qualifier=../../etc")),
    _trav("events_id_encoded", get(b"/v1/events/..%2f..%2fetc%2fpasswd", ADMIN)),
    _trav("events_id_raw_dotdot", get(b"/v1/events/../../etc/passwd", ADMIN)),
    _trav("events_redrive_encoded", post(b"/v1/events/..%2f..%2fevents.db/redrive", ADMIN, b"{}")),
]


# --------------------------------------------------------------------------------------
# Hostile JSON bodies (POST /v1/functions/tiny_mlp/invoke unless said otherwise)
# --------------------------------------------------------------------------------------
def _json(name, body, etype="invalid_json", status=400, note="", target=INVOKE, fields=b""):
    return Case(name, "json", post(target, fields, body), status, etype=etype, note=note)


def _in_str(raw):
    """A valid tiny_mlp body with `raw` bytes inside an extra string value."""
    return GOOD[:-1] + b',"note":"' + raw + b'"}'


JSON = [
    _json("utf8_lone_continuation", _in_str(b"\x80")),
    _json("utf8_invalid_ff_fe", _in_str(b"\xff\xfe")),
    _json("utf8_overlong_slash", _in_str(b"\xc0\xaf")),
    _json("utf8_overlong_nul", _in_str(b"\xc0\x80")),
    _json("utf8_surrogate_half", _in_str(b"\xed\xa0\x80")),
    _json("utf8_truncated_sequence", _in_str(b"\xe2\x82")),
    _json("utf8_above_u10ffff", _in_str(b"\xf4\x90\x80\x80")),
    _json("utf8_invalid_in_key", GOOD[:-1] + b',"k\xff":1}'),
    _json("latin1_body", GOOD[:-1] + b',"caf\xe9":1}'),
    _json("utf16le_body", GOOD.decode().encode("utf-16-le")),
    _json("escaped_lone_surrogate_name", b'{"inputs":{"\\ud800":[[1,2,3,4]],"ids":[[1,2]]}}', etype=V1_APP_ERRORS,
          target=b"/v1/functions/multi_input/invoke"),
    _json("nesting_10000_arrays", b'{"inputs":' + nested(10000) + b"}", etype=V1_APP_ERRORS),
    _json("nesting_10000_in_ignored_key", GOOD[:-1] + b',"pad":' + nested(10000) + b"}", etype=V1_APP_ERRORS),
    _json("nesting_10000_objects", b'{"a":' * 10000 + b"1" + b"}" * 10000, etype=V1_APP_ERRORS),
    _json("nesting_100000_unclosed", b"[" * 100000, etype=V1_APP_ERRORS),
    _json("nesting_65", with_pad(65), etype=V1_APP_ERRORS, note="server.max_json_depth 64: 65 is refused"),
    _json("nesting_65_in_inputs", b'{"inputs":' + nested(64, F16) + b"}", etype=V1_APP_ERRORS),
    _json("truncated", GOOD[:-5]),
    _json("truncated_in_string", b'{"inputs":"'),
    _json("only_open_brace", b"{"),
    _json("duplicate_key", GOOD[:-1] + b"," + GOOD[1:-1] + b"}", etype=V1_APP_ERRORS,
          note="RFC 8259: names SHOULD be unique; an ambiguous body is refused"),
    _json("duplicate_key_differing", b'{"inputs":[' + F16 + b'],"inputs":[[1,2]]}', etype=V1_APP_ERRORS),
    _json("trailing_garbage", GOOD + b"xyz"),
    _json("two_documents", GOOD + GOOD),
    _json("trailing_comma_array", b'{"inputs":[[' + b"0.5," * 16 + b"]]}"),
    _json("trailing_comma_object", GOOD[:-1] + b",}"),
    _json("comment", b"/* hi */" + GOOD),
    _json("single_quotes", GOOD.replace(b'"', b"'")),
    _json("unquoted_key", GOOD.replace(b'"inputs"', b"inputs")),
    _json("leading_zero_number", b'{"inputs":[[01' + b",0" * 15 + b"]]}"),
    _json("plus_number", b'{"inputs":[[+1' + b",0" * 15 + b"]]}"),
    _json("dot_number", b'{"inputs":[[.5' + b",0" * 15 + b"]]}"),
    _json("hex_number", b'{"inputs":[[0x10' + b",0" * 15 + b"]]}"),
    _json("raw_control_char_in_string", _in_str(b"a\x01b")),
    _json("raw_nul_after_document", GOOD + b"\x00"),
    _json("empty_body", b""),
    _json("whitespace_body", b" \r\n\t "),
    _json("nan_literal", b'{"inputs":[[NaN' + b",0" * 15 + b"]]}"),
    _json("infinity_literal", b'{"inputs":[[Infinity' + b",0" * 15 + b"]]}"),
    _json("negative_infinity_literal", b'{"inputs":[[-Infinity' + b",0" * 15 + b"]]}"),
    _json("number_1e999", b'{"inputs":[[1e999' + b",0" * 15 + b"]]}", etype=V1_APP_ERRORS,
          note="not representable as a double"),
    _json("number_minus_1e999", b'{"inputs":[[-1e999' + b",0" * 15 + b"]]}", etype=V1_APP_ERRORS),
    _json("body_null", b"null", etype="invalid_input"),
    _json("body_empty_array", b"[]", etype="invalid_input"),
    _json("body_string", b'"inputs"', etype="invalid_input"),
    _json("body_number", b"42", etype="invalid_input"),
    _json("gzip_body_with_content_encoding", gzip.compress(GOOD, mtime=0), etype=None, status=(400, 415),
          fields=b"Content-Encoding: gzip\r\n", note="an unsupported content coding: 415 (or 400)"),
    Case("bom_prefix", "json", invoke(b"\xef\xbb\xbf" + GOOD), (200, 400),
         note="RFC 8259 8.1: a parser MAY ignore a BOM"),
]


# --------------------------------------------------------------------------------------
# Values and types the models cannot take
# --------------------------------------------------------------------------------------
def _val(name, raw, etype="invalid_input", status=400, note=""):
    return Case(name, "values", raw, status, etype=etype, note=note)


VALUES = [
    _val("nan_string_into_i64", all_dtypes_with("i64", b'[["NaN",1]]')),
    _val("infinity_string_into_f32", all_dtypes_with("f32", b'[["Infinity",1]]')),
    _val("float_into_i64", all_dtypes_with("i64", b"[[1.5,1]]")),
    _val("integral_float_into_i32", all_dtypes_with("i32", b"[[2.0,1]]"), note="2.0 is not a JSON integer"),
    _val("exponent_into_i64", all_dtypes_with("i64", b"[[1e2,1]]")),
    _val("huge_float_into_i64", all_dtypes_with("i64", b"[[1e300,1]]")),
    _val("1e999_into_i64", all_dtypes_with("i64", b"[[1e999,1]]"), etype=V1_APP_ERRORS),
    _val("nan_literal_into_i32", all_dtypes_with("i32", b"[[NaN,1]]"), etype="invalid_json"),
    _val("negative_zero_float_into_u8", all_dtypes_with("u8", b"[[-0.0,1]]")),
    _val("i64_one_over_max", all_dtypes_with("i64", b"[[9223372036854775808,1]]")),
    _val("i64_one_under_min", all_dtypes_with("i64", b"[[-9223372036854775809,1]]"), etype=V1_APP_ERRORS),
    _val("beyond_uint64_into_i64", all_dtypes_with("i64", b"[[18446744073709551616,1]]"), etype=V1_APP_ERRORS),
    _val("i32_one_over_max", all_dtypes_with("i32", b"[[2147483648,1]]")),
    _val("i32_one_under_min", all_dtypes_with("i32", b"[[-2147483649,1]]")),
    _val("u8_1000", all_dtypes_with("u8", b"[[1000,1]]")),
    _val("i8_minus_129", all_dtypes_with("i8", b"[[-129,1]]")),
    _val("bool_into_i32", all_dtypes_with("i32", b"[[true,1]]")),
    _val("string_digit_into_i32", all_dtypes_with("i32", b'[["1",1]]')),
    _val("null_into_i64", all_dtypes_with("i64", b"[[null,1]]")),
    _val("string_true_into_bool", all_dtypes_with("b", b'[["true",false]]')),
    _val("number_into_bool", all_dtypes_with("b", b"[[1,0]]")),
    _val("rank_too_high_i64", all_dtypes_with("i64", b"[[[1],[2]]]")),
    _val("f64_1e309", all_dtypes_with("f64", b"[[1e309,1]]"), etype=V1_APP_ERRORS),
    _val("object_as_input_value", all_dtypes_with("i64", b'{"a":1}')),
    _val("empty_batch_row", tiny_body(b"[[]]")),
    _val("ragged_deep", tiny_body(b"[" + F16 + b",[" + F16 + b"]]")),
    _val("inputs_number", tiny_body(b"7")),
    _val("missing_batch_dim_multi", multi_input(ids=b"[1,2]")),
    _val("input_name_escaped_nul", post(b"/v1/functions/multi_input/invoke",
                                        body=b'{"inputs":{"features":[[1,2,3,4]],"ids":[[1,2]],"\\u0000":[[1]]}}')),
    _val("input_name_10k", post(b"/v1/functions/multi_input/invoke",
                                body=b'{"inputs":{"features":[[1,2,3,4]],"ids":[[1,2]],"' + b"n" * 10000
                                + b'":[[1]]}}')),
    _val("batch_not_array", post(b"/v1/batch", body=b'{"model":"tiny_mlp"}')),
    _val("batch_item_not_object", post(b"/v1/batch", body=b"[1,2,3]"), status=(200, 400), etype=None,
         note="per-item errors in a 200 array, or a 400 for the whole batch"),
    _val("batch_over_max_items", post(b"/v1/batch", body=b"[" + b",".join(
        [b'{"model":"tiny_mlp","inputs":[' + F16 + b"]}"] * 257) + b"]"), note="server.max_batch_items 256"),
]


# --------------------------------------------------------------------------------------
# Open Inference Protocol v2: {"error": "message"} with 400 / 404
# --------------------------------------------------------------------------------------
def _v2(name, raw, status=400, note=""):
    return Case(name, "v2", raw, status, note=note)


def _shape(shape):
    return v2_infer(v2_input(shape=shape))


V2 = [
    _v2("unknown_model_metadata", get(b"/v2/models/no_such_model"), 404),
    _v2("unknown_model_ready", get(b"/v2/models/no_such_model/ready"), 404),
    _v2("unknown_model_infer", v2_infer(model=b"no_such_model"), 404),
    _v2("unknown_version_metadata", get(b"/v2/models/tiny_mlp/versions/9.9.9"), 404),
    _v2("unknown_version_infer", v2_infer(version=b"9.9.9"), 404),
    _v2("unknown_v2_route", get(b"/v2/no_such_route"), 404),
    _v2("invalid_json", v2_infer(body=b'{"inputs":[')),
    _v2("body_not_object", v2_infer(body=b"[]")),
    _v2("inputs_not_array", v2_infer(body=b'{"inputs":{"x":1}}')),
    _v2("no_inputs", v2_infer(body=b"{}")),
    _v2("shape_product_overflows_int64", _shape(b"[1152921504606846976,16]"), note="2^60 x 16 = 2^64"),
    _v2("shape_product_is_2_63", _shape(b"[576460752303423488,16]")),
    _v2("shape_dims_multiply_past_int64_slowly", v2_infer(v2_input(shape=b"[4294967296,4294967296]"))),
    _v2("shape_dim_beyond_int64", _shape(b"[18446744073709551616,16]")),
    _v2("shape_negative_batch", _shape(b"[-1,16]")),
    _v2("shape_negative_inner", _shape(b"[1,-16]")),
    _v2("shape_huge_within_int64", _shape(b"[1000000000000,16]"), note="over max_tensor_elements: no allocation"),
    _v2("shape_float_dim", _shape(b"[1.5,16]")),
    _v2("shape_string_dim", _shape(b'["1",16]')),
    _v2("shape_not_array", _shape(b"16")),
    _v2("shape_wrong_rank", _shape(b"[1,4,4]")),
    _v2("data_count_mismatch", v2_infer(v2_input(data=b"[" + b",".join([b"0.5"] * 15) + b"]"))),
    _v2("data_nan_literal", v2_infer(v2_input(data=b"[NaN" + b",0" * 15 + b"]"))),
    _v2("data_strings_into_fp32", v2_infer(v2_input(data=b'["a"' + b',"b"' * 15 + b"]"))),
    _v2("datatype_mismatch_fp64", v2_infer(v2_input(datatype=b'"FP64"'))),
    _v2("datatype_unknown", v2_infer(v2_input(datatype=b'"FP128"'))),
    _v2("datatype_fp16_unsupported", v2_infer(v2_input(datatype=b'"FP16"'))),
    _v2("datatype_bytes_unsupported", v2_infer(v2_input(datatype=b'"BYTES"', data=b'["a"' + b',"b"' * 15 + b"]"))),
    _v2("datatype_not_string", v2_infer(v2_input(datatype=b"32"))),
    _v2("unknown_input_name", v2_infer(v2_input(name=b"not_x"))),
    _v2("input_twice", v2_infer(v2_input() + b"," + v2_input())),
    _v2("unknown_output_requested", v2_infer(extra=b',"outputs":[{"name":"nope"}]')),
    _v2("int64_gets_float", v2_all_dtypes("i64", "INT64", "[1.5,2]")),
    _v2("int32_overflow", v2_all_dtypes("i32", "INT32", "[2147483648,2]")),
    _v2("uint8_negative", v2_all_dtypes("u8", "UINT8", "[-1,2]")),
    _v2("bool_gets_number", v2_all_dtypes("b", "BOOL", "[1,0]")),
    _v2("int64_gets_1e999", v2_all_dtypes("i64", "INT64", "[1e999,2]")),
    _v2("header_length_beyond_body", v2_infer(fields=b"Inference-Header-Content-Length: 100000\r\n")),
    _v2("header_length_negative", v2_infer(fields=b"Inference-Header-Content-Length: -1\r\n")),
    _v2("header_length_not_a_number", v2_infer(fields=b"Inference-Header-Content-Length: abc\r\n")),
    _v2("binary_size_beyond_tail", v2_binary(b"\x00" * 10)),
    _v2("binary_tail_left_over", v2_binary(b"\x00" * 80)),
    _v2("nesting_65", v2_infer(extra=b',"parameters":{"p":' + nested(63) + b"}")),
    _v2("nesting_10000", v2_infer(extra=b',"parameters":{"p":' + nested(10000) + b"}")),
]


CASES = SMUGGLING + CHUNKING + REQUEST_LINE + HEADERS + LIMITS + METHODS + TRAVERSAL + JSON + VALUES + V2


# --------------------------------------------------------------------------------------
# Requests that never finish: 408 within the 10 s whole-request limit (run in parallel)
# --------------------------------------------------------------------------------------
STALL_LIMIT = 10.0
STALL_CASES = [
    Case("head_never_finished", "stall", [b"POST /v1/functions/tiny_mlp/invoke HTTP/1.1\r\n" + HOST],
         408, closes=True, timeout=STALL_LIMIT + 5),
    Case("body_never_finished", "stall", [post(body=GOOD)[:-20]], 408, closes=True, timeout=STALL_LIMIT + 5),
    Case("head_trickled", "stall", [bytes([c]) for c in b"GET /v1/health HTTP/1.1\r\nX-Slow: " + b"a" * 40],
         408, closes=True, gap=0.33, timeout=STALL_LIMIT + 5,
         note="one byte every 0.33 s: each read is quick, the whole request is not"),
]


# --------------------------------------------------------------------------------------
# Controls: valid requests at the limits, so each family's refusals are known to be for
# their one hostile change (expected 200)
# --------------------------------------------------------------------------------------
CONTROLS = [
    Case("invoke", "control", post(), 200),
    Case("head_exactly_60k", "control", head_of_size(MAX_HEAD), 200),
    Case("fields_exactly_100", "control", head_with_fields(MAX_FIELDS), 200),
    Case("target_exactly_8k", "control", get(target_of_length(MAX_TARGET)), 200),
    Case("body_exactly_6m", "control", post(body=padded(GOOD, MAX_BODY)), 200, timeout=30),
    Case("chunked_with_extensions", "control",
         te_post(TE_CHUNKED, b"%x;name=value;flag\r\n" % N + GOOD + b"\r\n0\r\n\r\n"), 200),
    Case("chunked_with_trailer", "control",
         te_post(TE_CHUNKED, b"%x\r\n" % N + GOOD + b"\r\n0\r\nX-Trailer: ok\r\n\r\n"), 200),
    Case("nesting_64", "control", post(body=with_pad(64)), 200, note="64 levels are accepted"),
    Case("all_dtypes", "control", post(b"/v1/functions/all_dtypes/invoke",
                                       body=json_bytes({"inputs": ALL_DTYPES})), 200),
    Case("v2_infer", "control", v2_infer(), 200),
    Case("v2_all_dtypes", "control", v2_all_dtypes("f32", "FP32", "[1.5,-2]"), 200),
    Case("v2_binary_input", "control", v2_binary(b"\x00" * 64), 200),
    Case("admin_jobs", "control", get(b"/v1/jobs", ADMIN), 200, note="the admin token of ADMIN works"),
    Case("v2_server_live", "control", get(b"/v2/health/live"), 200),
    Case("v2_server_ready", "control", get(b"/v2/health/ready"), 200),
    Case("v2_server_metadata", "control", get(b"/v2"), 200),
    Case("v2_model_metadata", "control", get(b"/v2/models/tiny_mlp"), 200),
    Case("v2_model_ready", "control", get(b"/v2/models/tiny_mlp/ready"), 200),
    Case("v2_model_version_metadata", "control", get(b"/v2/models/tiny_mlp/versions/1.0.0"), 200),
]


# --------------------------------------------------------------------------------------
# Auth (test_hostile_auth.py). ctx holds: "good_jwt", "admin_token", and the forged tokens
# built there (keys "jwt_<name>").
# --------------------------------------------------------------------------------------
AUTH_JWT_FN = b"/v1/functions/tiny_mlp/invoke"    # functions.tiny_mlp.auth: jwt
AUTH_KEY_FN = b"/v1/functions/digits/invoke"      # functions.digits.auth: api_key
DIGITS_BODY = json_bytes({"inputs": [[0] * 64]})


def _bearer(token):
    return b"Authorization: Bearer " + token.encode("latin-1") + b"\r\n"


def _jwt_case(name, token_key, note=""):
    return Case(name, "auth_jwt", lambda ctx: post(AUTH_JWT_FN, _bearer(ctx[token_key])), 401,
                www_auth=True, note=note)


def _jwt_raw_case(name, fields, note=""):
    return Case(name, "auth_jwt", post(AUTH_JWT_FN, fields), 401, www_auth=True, note=note)


FORGED_JWTS = [  # (case name, ctx key, note); test_hostile_auth.py mints ctx["jwt_" + name]
    ("alg_none", "unsigned, alg none"),
    ("alg_none_capitalised", "alg 'None'"),
    ("alg_none_with_signature", "alg none but the real signature kept"),
    ("hs256_with_rsa_public_key", "HS256 keyed with the RS256 public key (key confusion)"),
    ("bad_signature", "signed by another RSA key under the same kid"),
    ("tampered_payload", "payload changed after signing"),
    ("tampered_header_kid", "kid changed after signing"),
    ("signature_stripped", "header.payload. with an empty signature"),
    ("expired", "exp an hour ago (beyond any leeway)"),
    ("nbf_future", "nbf an hour ahead"),
    ("wrong_issuer", "iss https://evil.example"),
    ("wrong_audience", "aud someone-else"),
    ("missing_exp", "no exp claim"),
    ("unknown_kid", "signed by an unknown key with an unknown kid"),
    ("embedded_jwk", "attacker key embedded in the header (jwk)"),
    ("jku_header", "header jku pointing at an attacker JWKS"),
    ("es256_alg_for_rsa_kid", "alg ES256 with the RSA key's kid"),
    ("garbage", "not a JWT at all"),
    ("two_segments", "header.payload"),
    ("four_segments", "a fifth segment appended"),
    ("invalid_base64", "segments that are not base64url"),
    ("header_not_json", "header segment decodes to non-JSON"),
    ("payload_array", "payload is a JSON array"),
    ("oversized_50k", "a 50 KB token"),
]

AUTH_CASES = [_jwt_case(n, "jwt_" + n, note) for n, note in FORGED_JWTS] + [
    _jwt_raw_case("no_authorization", b""),
    _jwt_raw_case("empty_bearer", b"Authorization: Bearer \r\n"),
    _jwt_raw_case("basic_scheme", b"Authorization: Basic " + base64.b64encode(b"admin:admin") + b"\r\n"),
    _jwt_raw_case("token_without_scheme", b"Authorization: eyJhbGciOiJub25lIn0.e30.\r\n"),
    Case("api_key_instead_of_jwt", "auth_jwt", post(AUTH_JWT_FN, b"X-Api-Key: pk_not_a_jwt\r\n"), 401,
         www_auth=True),
    Case("admin_token_as_jwt", "auth_jwt", lambda ctx: post(AUTH_JWT_FN, _bearer(ctx["admin_token"])), 401,
         www_auth=True, note="the admin token is not a JWT"),
    Case("jwt_on_v2_route", "auth_jwt", lambda ctx: v2_infer(fields=_bearer(ctx["jwt_expired"])), 401,
         www_auth=True, shape=None, note="the v2 route of the same function"),
    Case("jwt_on_lambda_route", "auth_jwt", lambda ctx: post(b"/2015-03-31/functions/tiny_mlp/invocations",
                                                             _bearer(ctx["jwt_alg_none"])), 401,
         www_auth=True, shape=None),
    Case("no_jwt_on_infer_route", "auth_jwt", post(b"/v1/infer?model=tiny_mlp"), 401, www_auth=True),
    Case("no_jwt_in_batch", "auth_jwt", post(b"/v1/batch", body=b'[{"model":"tiny_mlp","inputs":[' + F16 + b"]}]"),
         (200, 401), shape=None, note="a 401 for the batch, or a 200 array whose item is a 401 error"),
    Case("missing_api_key", "auth_api_key", post(AUTH_KEY_FN, body=DIGITS_BODY), 401),
    Case("unknown_api_key", "auth_api_key", post(AUTH_KEY_FN, b"X-Api-Key: pk_live_unknown\r\n", DIGITS_BODY), 401),
    Case("empty_api_key", "auth_api_key", post(AUTH_KEY_FN, b"X-Api-Key: \r\n", DIGITS_BODY), 401),
    Case("api_key_as_bearer_unknown", "auth_api_key", post(AUTH_KEY_FN, _bearer("pk_live_unknown"),
                                                           DIGITS_BODY), 401),
    Case("jwt_for_api_key_function", "auth_api_key", lambda ctx: post(AUTH_KEY_FN, _bearer(ctx["good_jwt"]),
                                                                      DIGITS_BODY), 401,
         note="a valid JWT is not an API key"),
    Case("admin_token_for_api_key_function", "auth_api_key",
         lambda ctx: post(AUTH_KEY_FN, b"X-Api-Key: " + ctx["admin_token"].encode() + b"\r\n", DIGITS_BODY),
         (401, 403), note="the admin token is not an API key (401), or is refused for the function (403)"),
    Case("api_key_sql_injection", "auth_api_key", post(AUTH_KEY_FN, b"X-Api-Key: ' OR '1'='1\r\n", DIGITS_BODY),
         401),
    Case("api_key_10k", "auth_api_key", post(AUTH_KEY_FN, b"X-Api-Key: " + b"k" * 10000 + b"\r\n", DIGITS_BODY),
         401),
]


ADMIN_ROUTES = [
    ("promote", lambda f: post(b"/admin/models/tiny_mlp/promote", f, PROMOTE_BODY)),
    ("rollback", lambda f: post(b"/admin/models/tiny_mlp/rollback", f, b"{}")),
    ("events", lambda f: get(b"/v1/events", f)),
    ("event_by_id", lambda f: get(b"/v1/events/0123456789abcdef", f)),
    ("jobs", lambda f: get(b"/v1/jobs", f)),
]
for _route, _build in ADMIN_ROUTES:
    AUTH_CASES += [
        Case("%s_no_token" % _route, "auth_admin", _build(b""), 401),
        Case("%s_wrong_token" % _route, "auth_admin", _build(_bearer("wrong-admin-token")), 401),
        Case("%s_token_prefix" % _route, "auth_admin",
             (lambda b: lambda ctx: b(_bearer(ctx["admin_token"][:-1])))(_build), 401,
             note="the admin token minus its last character"),
        Case("%s_token_extended" % _route, "auth_admin",
             (lambda b: lambda ctx: b(_bearer(ctx["admin_token"] + "x")))(_build), 401),
        Case("%s_jwt_as_admin" % _route, "auth_admin",
             (lambda b: lambda ctx: b(_bearer(ctx["good_jwt"])))(_build), 401,
             note="a valid function JWT is not the admin token"),
    ]
AUTH_CASES += [
    Case("admin_token_in_query", "auth_admin",
         lambda ctx: get(b"/v1/jobs?token=" + ctx["admin_token"].encode()), 401,
         note="the admin token is only accepted as a credential header"),
    Case("admin_basic_scheme", "auth_admin",
         lambda ctx: get(b"/v1/jobs", b"Authorization: Basic "
                         + base64.b64encode(b"admin:" + ctx["admin_token"].encode()) + b"\r\n"), 401),
]

AUTH_CONTROLS = [
    Case("jwt_invoke", "auth_control", lambda ctx: post(AUTH_JWT_FN, _bearer(ctx["good_jwt"])), 200),
    Case("admin_jobs", "auth_control", lambda ctx: get(b"/v1/jobs", _bearer(ctx["admin_token"])), 200),
    Case("admin_events", "auth_control", lambda ctx: get(b"/v1/events", _bearer(ctx["admin_token"])), 200),
    Case("open_function", "auth_control", post(b"/v1/functions/all_dtypes/invoke",
                                               body=json_bytes({"inputs": ALL_DTYPES})), 200,
         note="a function without auth: stays open"),
]


# --------------------------------------------------------------------------------------
# Sending a case and judging its answer
# --------------------------------------------------------------------------------------
def check_error_body(case, ex, shape):
    """The error body's shape: v1 typed errors, v2 {"error": "message"}, AWS {"Type", "message"}."""
    where = "%s: %d" % (case.id, ex.status)
    if shape is None or case.head:
        return
    ctype = ex.headers.get("content-type", "")
    assert ctype.startswith("application/json"), "%s: error Content-Type %r, body %r" % (where, ctype, ex.body[:300])
    try:
        text = ex.body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AssertionError("%s: the error body is not valid UTF-8 (%s; request bytes echoed unescaped?): %r"
                             % (where, e.reason, ex.body[:300])) from None
    try:
        doc = json.loads(text)
    except ValueError:
        raise AssertionError("%s: error body is not JSON: %r" % (where, ex.body[:300])) from None
    if shape == "v1":
        err = doc.get("error") if isinstance(doc, dict) else None
        assert isinstance(err, dict), "%s: expected {\"error\": {type, message, request_id}}, got %r" % (
            where, ex.body[:300])
        assert isinstance(err.get("type"), str) and err["type"], "%s: error without a type: %r" % (where, err)
        assert isinstance(err.get("message"), str) and err["message"].strip(), "%s: %r" % (where, err)
        rid = err.get("request_id")
        assert isinstance(rid, str) and rid, "%s: error without request_id: %r" % (where, err)
        assert ex.headers.get("x-request-id") == rid, "%s: X-Request-Id %r != body request_id %r" % (
            where, ex.headers.get("x-request-id"), rid)
        if case.etype:
            allowed = case.etype if isinstance(case.etype, tuple) else (case.etype,)
            assert err["type"] in allowed, "%s: error type %r, expected %s (message: %s)" % (
                where, err["type"], " or ".join(allowed), err.get("message"))
    elif shape == "v2":
        assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"].strip(), (
            "%s: expected the v2 error shape {\"error\": \"message\"}, got %r" % (where, ex.body[:300]))
    elif shape == "aws":
        assert isinstance(doc, dict) and isinstance(doc.get("message"), str), (
            "%s: expected the Lambda error shape {\"Type\", \"message\"}, got %r" % (where, ex.body[:300]))


def check_case(case, ex, parts):
    expected = " or ".join(str(s) for s in case.statuses)
    assert ex.status is not None, "%s: expected %s, got %s%s" % (
        case.id, expected, ex.describe(), " (" + case.note + ")" if case.note else "")
    assert ex.status in case.statuses, "%s: expected %s, got %s%s" % (
        case.id, expected, ex.describe(), " (" + case.note + ")" if case.note else "")
    if ex.status >= 400:
        check_error_body(case, ex, case.error_shape(parts[0]))
    if ex.status == 405 and case.allow:
        allow = [m.strip() for m in ex.headers.get("allow", "").split(",")]
        assert case.allow in allow, "%s: 405 with Allow %r, expected it to name %s" % (
            case.id, ex.headers.get("allow"), case.allow)
    if ex.status == 401 and case.www_auth:
        assert ex.headers.get("www-authenticate", "").strip(), "%s: 401 without WWW-Authenticate" % case.id
    if case.closes and ex.status >= 400:
        etype = _v1_error_type(ex)
        assert etype not in APP_ERROR_TYPES, (
            "%s: %d %s — the body reached the application, so the framing was accepted (it must be refused "
            "by the HTTP layer and the connection closed)%s" % (
                case.id, ex.status, etype, "; then a second response followed: %r" % ex.trailing[:200]
                if ex.trailing.startswith(b"HTTP/") else ""))
        assert not ex.trailing.startswith(b"HTTP/"), (
            "%s: a second response followed the %d — the bytes behind the request were served as a "
            "request (smuggling): %r" % (case.id, ex.status, ex.trailing[:300]))
        assert ex.closed_after, "%s: answered %d but the connection stayed open (framing errors must close it)" % (
            case.id, ex.status)
        assert not ex.trailing, "%s: unexpected bytes after the response: %r" % (case.id, ex.trailing[:300])


def _v1_error_type(ex):
    try:
        err = json.loads(ex.body.decode("utf-8")).get("error")
        return err.get("type") if isinstance(err, dict) else None
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None


def run_case(server, case, ctx=None):
    """Sends `case` on a fresh connection; returns (the bytes sent, rawhttp.Exchange)."""
    parts = case.bytes_for(ctx or {})
    ex = rawhttp.exchange(server.port, parts, timeout=case.timeout, half_close=case.half_close,
                          check_close=case.closes, head_only=case.head, gap=case.gap)
    return parts, ex


