#!/usr/bin/python3
"""Renders docs/api-reference.md from the OpenAPI document src/gateway/openapi.json.

    /usr/bin/python3 tools/gen_api_reference.py           # (re)write docs/api-reference.md
    /usr/bin/python3 tools/gen_api_reference.py --check   # exit 1 if docs/api-reference.md is stale

The OpenAPI file is the source of truth: edit it, then run this. The reference groups the
operations by tag (in the order of the document's `tags`), and gives for each: method and path,
summary, description, authentication, parameters, request body, responses (status, meaning,
headers, body schema); then every component schema as a table of fields. Schemas are shown
as compact sketches: `string`, `integer`, `T[]`, `{ [key]: T }`, `A | B`, links to the schema
section for named schemas. Output is deterministic (no timestamps), so --check can compare
bytes. Standard library only.
"""

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "src" / "gateway" / "openapi.json"
OUT = REPO / "docs" / "api-reference.md"

METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]


class Doc:
    def __init__(self, spec):
        self.spec = spec
        self.components = spec.get("components", {})

    def resolve(self, obj):
        """Follows a local $ref (#/components/...) to its target; other objects as they are."""
        seen = 0
        while isinstance(obj, dict) and "$ref" in obj:
            ref = obj["$ref"]
            if not ref.startswith("#/"):
                raise SystemExit("only local $refs are supported: %s" % ref)
            node = self.spec
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(node, dict) or part not in node:
                    raise SystemExit("unresolvable $ref %s" % ref)
                node = node[part]
            obj = node
            seen += 1
            if seen > 32:
                raise SystemExit("$ref cycle at %s" % ref)
        return obj


def anchor(kind, name):
    return "%s-%s" % (kind, re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"))


def schema_link(name):
    return "[%s](#%s)" % (name, anchor("schema", name))


def ref_name(ref):
    return ref.rsplit("/", 1)[-1]


def sketch(doc, schema, depth=0):
    """A one-line, human sketch of a schema (markdown; callers escape | inside tables)."""
    if schema is None:
        return "—"
    if "$ref" in schema:
        ref = schema["$ref"]
        if ref.startswith("#/components/schemas/"):
            return schema_link(ref_name(ref))
        return sketch(doc, doc.resolve(schema), depth)
    if not schema or set(schema) <= {"description", "example", "examples"}:
        return "any"
    for key, sep in (("oneOf", " | "), ("anyOf", " | ")):
        if key in schema:
            return sep.join(sketch(doc, s, depth + 1) for s in schema[key]) + _nullable(schema)
    if "allOf" in schema:
        parts = [sketch(doc, s, depth + 1) for s in schema["allOf"]]
        return (parts[0] if len(parts) == 1 else " & ".join(parts)) + _nullable(schema)
    if "enum" in schema:
        return " | ".join("`%s`" % json.dumps(v) for v in schema["enum"]) + _nullable(schema)
    t = schema.get("type")
    if t == "array":
        inner = sketch(doc, schema.get("items", {}), depth + 1)
        if " | " in inner or " & " in inner:
            inner = "(%s)" % inner
        return inner + "[]" + _nullable(schema)
    if t == "object" or "properties" in schema or "additionalProperties" in schema:
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        if props and depth >= 2:
            return "object" + _nullable(schema)
        items = []
        for name, sub in props.items():
            items.append("%s%s: %s" % (name, "" if name in required else "?", sketch(doc, sub, depth + 1)))
        ap = schema.get("additionalProperties")
        if isinstance(ap, dict):
            items.append("[key]: %s" % sketch(doc, ap, depth + 1))
        if not items:
            return "object" + _nullable(schema)
        return "{ " + ", ".join(items) + " }" + _nullable(schema)
    if t:
        fmt = schema.get("format")
        base = "%s (%s)" % (t, fmt) if fmt else t
        return base + _nullable(schema)
    return "any"


def _nullable(schema):
    return " | null" if schema.get("nullable") else ""


def cell(text):
    """Text fit for one markdown table cell."""
    text = " ".join(str(text).split("\n"))
    return text.replace("|", "\\|").strip() or "—"


def security_text(doc, op):
    reqs = op.get("security", doc.spec.get("security"))
    if reqs is None or reqs == []:
        return "none"
    alts = []
    for req in reqs:
        if not req:
            alts.append("anonymous (when the function does not require credentials)")
            continue
        names = []
        for name in req:
            scheme = doc.components.get("securitySchemes", {}).get(name, {})
            if scheme.get("type") == "apiKey":
                names.append("%s (`%s` %s)" % (name, scheme.get("name"), scheme.get("in")))
            elif scheme.get("type") == "http":
                names.append("%s (`Authorization: %s`)" % (name, scheme.get("scheme", "").capitalize()))
            else:
                names.append(name)
        alts.append(" and ".join(names))
    return "; or ".join(alts)


def render_parameters(doc, params, out):
    if not params:
        return
    out.append("")
    out.append("| parameter | in | type | required | description |")
    out.append("| --- | --- | --- | --- | --- |")
    for p in params:
        p = doc.resolve(p)
        schema = p.get("schema", {})
        typ = sketch(doc, schema)
        if "default" in schema:
            typ += " (default `%s`)" % json.dumps(schema["default"])
        out.append("| `%s` | %s | %s | %s | %s |" % (
            p["name"], p["in"], cell(typ), "yes" if p.get("required") else "no", cell(p.get("description", ""))))


def render_body(doc, body, out):
    if not body:
        return
    body = doc.resolve(body)
    out.append("")
    req = "required" if body.get("required") else "optional"
    line = "**Request body** (%s)" % req
    if body.get("description"):
        line += ": " + body["description"]
    out.append(line)
    out.append("")
    for ctype, media in body.get("content", {}).items():
        out.append("- `%s`: %s" % (ctype, sketch(doc, media.get("schema"))))
        example = media.get("example")
        if example is None and "schema" in media:
            example = doc.resolve(media["schema"]).get("example")
        if example is not None and ctype.endswith("json"):
            out.append("")
            out.append("  ```json")
            out.append("  " + json.dumps(example, ensure_ascii=False))
            out.append("  ```")


def render_responses(doc, responses, out):
    out.append("")
    out.append("| status | meaning | headers | body |")
    out.append("| --- | --- | --- | --- |")
    for status, resp in responses.items():
        resp = doc.resolve(resp)
        headers = ", ".join("`%s`" % h for h in resp.get("headers", {}))
        bodies = []
        for ctype, media in resp.get("content", {}).items():
            bodies.append("`%s` %s" % (ctype, sketch(doc, media.get("schema"))))
        out.append("| %s | %s | %s | %s |" % (status, cell(resp.get("description", "")), cell(headers),
                                              cell("; ".join(bodies)) if bodies else "—"))


def operations(spec):
    for path, item in spec.get("paths", {}).items():
        for method, op in item.items():
            if method in METHODS:
                yield path, method, item, op


def render(spec):
    doc = Doc(spec)
    info = spec.get("info", {})
    out = ["<!-- Generated by tools/gen_api_reference.py from src/gateway/openapi.json: edit those, "
           "not this file. -->", "",
           "# %s API reference" % info.get("title", "API"), ""]
    out.append("OpenAPI %s document: [`src/gateway/openapi.json`](../src/gateway/openapi.json) (also served "
               "at `GET /openapi.json`). API version %s." % (spec.get("openapi"), info.get("version")))
    servers = spec.get("servers", [])
    if servers:
        out.append("Default server: `%s`." % servers[0]["url"])
    if info.get("description"):
        out += ["", info["description"]]

    tags = [t["name"] for t in spec.get("tags", [])]
    for _, _, _, op in operations(spec):
        for t in op.get("tags", ["Other"]):
            if t not in tags:
                tags.append(t)
    by_tag = {t: [] for t in tags}
    for path, method, item, op in operations(spec):
        by_tag[(op.get("tags") or ["Other"])[0]].append((path, method, item, op))
    tag_desc = {t["name"]: t.get("description", "") for t in spec.get("tags", [])}

    out += ["", "## Contents", ""]
    for t in tags:
        if not by_tag[t]:
            continue
        out.append("- [%s](#%s)" % (t, anchor("tag", t)))
        for path, method, _, op in by_tag[t]:
            out.append("  - [`%s %s`](#%s) — %s" % (method.upper(), path, anchor("op", op["operationId"]),
                                                    op.get("summary", "")))
    out.append("- [Authentication](#authentication)")
    out.append("- [Schemas](#schemas)")

    for t in tags:
        if not by_tag[t]:
            continue
        out += ["", '<a id="%s"></a>' % anchor("tag", t), "", "## %s" % t]
        if tag_desc.get(t):
            out += ["", tag_desc[t]]
        for path, method, item, op in by_tag[t]:
            out += ["", '<a id="%s"></a>' % anchor("op", op["operationId"]), "",
                    "### `%s %s`" % (method.upper(), path), ""]
            out.append("**%s** (`%s`)" % (op.get("summary", ""), op["operationId"]))
            if op.get("description"):
                out += ["", op["description"]]
            out += ["", "**Auth:** %s" % security_text(doc, op)]
            params = list(item.get("parameters", []))
            own = op.get("parameters", [])
            own_keys = {(doc.resolve(p)["name"], doc.resolve(p)["in"]) for p in own}
            params = [p for p in params if (doc.resolve(p)["name"], doc.resolve(p)["in"]) not in own_keys] + own
            render_parameters(doc, params, out)
            render_body(doc, op.get("requestBody"), out)
            render_responses(doc, op.get("responses", {}), out)

    schemes = doc.components.get("securitySchemes", {})
    out += ["", '<a id="authentication"></a>', "", "## Authentication", ""]
    out.append("| scheme | how | description |")
    out.append("| --- | --- | --- |")
    for name, s in schemes.items():
        if s.get("type") == "apiKey":
            how = "`%s` %s" % (s.get("name"), s.get("in"))
        elif s.get("type") == "http":
            how = "HTTP `%s`%s" % (s.get("scheme"), " (%s)" % s["bearerFormat"] if s.get("bearerFormat") else "")
        else:
            how = s.get("type", "")
        out.append("| %s | %s | %s |" % (name, cell(how), cell(s.get("description", ""))))

    out += ["", '<a id="schemas"></a>', "", "## Schemas"]
    for name, schema in doc.components.get("schemas", {}).items():
        out += ["", '<a id="%s"></a>' % anchor("schema", name), "", "### %s" % name, ""]
        if schema.get("description"):
            out += [schema["description"], ""]
        props = schema.get("properties")
        if props:
            required = set(schema.get("required", []))
            out.append("| field | type | required | description |")
            out.append("| --- | --- | --- | --- |")
            for field, sub in props.items():
                desc = sub.get("description", "") if "$ref" not in sub else ""
                out.append("| `%s` | %s | %s | %s |" % (field, cell(sketch(doc, sub, 1)),
                                                        "yes" if field in required else "no", cell(desc)))
            ap = schema.get("additionalProperties")
            if isinstance(ap, dict):
                out.append("| *(any other key)* | %s | no | — |" % cell(sketch(doc, ap, 1)))
        else:
            out.append("Type: %s" % sketch(doc, {k: v for k, v in schema.items() if k != "description"}))
        if "example" in schema:
            out += ["", "Example:", "", "```json", json.dumps(schema["example"], ensure_ascii=False), "```"]
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the output file is not up to date")
    ap.add_argument("--spec", default=str(SPEC), help="the OpenAPI JSON (default: %(default)s)")
    ap.add_argument("--out", default=str(OUT), help="the markdown file (default: %(default)s)")
    args = ap.parse_args(argv)
    with open(args.spec, "r", encoding="utf-8") as f:
        spec = json.load(f)
    text = render(spec)
    out = Path(args.out)
    if args.check:
        current = out.read_text(encoding="utf-8") if out.is_file() else ""
        if current == text:
            return 0
        diff = difflib.unified_diff(current.splitlines(), text.splitlines(), str(out), "generated", lineterm="", n=1)
        lines = list(diff)
        sys.stderr.write("%s is stale: run /usr/bin/python3 tools/gen_api_reference.py\n" % out)
        sys.stderr.write("\n".join(lines[:60]) + ("\n..." if len(lines) > 60 else "") + "\n")
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
