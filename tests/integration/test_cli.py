"""The CLI: `model push` (version folder, manifest.json with sha256/size, framework, schema,
created_at; current.json), `model list|versions|promote|rollback`, refusals with helpful
messages and non-zero exits, `--help` for every subcommand, `invoke` against a running server,
and `serve` with no config file (every model in the store is a function of the same name,
default store ./models)."""

import datetime
import json

import pytest

from support import (ALL_STORE_MODELS, MODELS, assert_ok, cli_output, free_port, push_model, run_cli,
                     sha256_file, shape_of, store_uri, tiny_rows)


def read_json(path):
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def norm_dtype(d):
    d = str(d).lower()
    if d.startswith("tensor(") and d.endswith(")"):
        d = d[7:-1]
    return {"float": "float32", "double": "float64", "boolean": "bool"}.get(d, d)


def tensor_specs(entries):
    """manifest inputs/outputs (a list of {name, dtype, shape} or an object keyed by name)
    -> {name: (dtype, shape)}"""
    if isinstance(entries, dict):
        return {k: (norm_dtype(v["dtype"]), v["shape"]) for k, v in entries.items()}
    assert isinstance(entries, list), entries
    return {e["name"]: (norm_dtype(e["dtype"]), e["shape"]) for e in entries}


def is_dynamic(dim):
    return dim is None or dim == -1 or isinstance(dim, str)


def check_schema(got, expected):
    assert set(got) == set(expected), (got, expected)
    for name, (dtype, dims) in expected.items():
        gdtype, gshape = got[name]
        assert gdtype == dtype, "%s: dtype %r, expected %r" % (name, gdtype, dtype)
        assert len(gshape) == 1 + len(dims), (name, gshape)
        assert is_dynamic(gshape[0]), "%s: batch dimension %r is not dynamic" % (name, gshape)
        assert list(gshape[1:]) == dims, (name, gshape, dims)


def new_store(tmp_path, name="models"):
    path = tmp_path / name
    return path, store_uri(path)


def current(path, model):
    return read_json(path / model / "current.json")


# --------------------------------------------------------------------------------------
# model push
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["multi_input", "all_dtypes", "digits"])
def test_push_writes_version_folder_and_manifest(tmp_path, models_dir, pilotlight_bin, model):
    path, uri = new_store(tmp_path)
    src = models_dir / (model + ".onnx")
    before = datetime.datetime.now(datetime.timezone.utc)
    push_model(uri, src, model, "1.0.0", promote=True)

    vdir = path / model / "versions" / "1.0.0"
    assert (vdir / "model.onnx").read_bytes() == src.read_bytes()
    manifest = read_json(vdir / "manifest.json")
    sha = sha256_file(src)

    files = manifest["files"]
    assert isinstance(files, list) and files, manifest
    entry = next((f for f in files if f.get("path") == "model.onnx"), None)
    assert entry is not None, "no files entry for model.onnx: %r" % files
    assert entry["sha256"] == sha, (entry, sha)
    assert entry["size"] == src.stat().st_size, entry

    assert isinstance(manifest.get("framework"), str) and manifest["framework"], manifest
    check_schema(tensor_specs(manifest["inputs"]),
                 {k: v for k, v in MODELS[model]["inputs"].items()})
    check_schema(tensor_specs(manifest["outputs"]),
                 {k: v for k, v in MODELS[model]["outputs"].items()})

    created = datetime.datetime.fromisoformat(manifest["created_at"].replace("Z", "+00:00"))
    assert created.tzinfo is not None, "created_at without a time zone: %r" % manifest["created_at"]
    assert abs((created - before).total_seconds()) < 3600, manifest["created_at"]
    if "name" in manifest:
        assert manifest["name"] == model
    if "version" in manifest:
        assert manifest["version"] == "1.0.0"

    # current.json names the sha256 of the promoted version's manifest.json (issue 4 contract)
    cur = current(path, model)
    manifest_sha = sha256_file(path / model / "versions" / "1.0.0" / "manifest.json")
    assert cur["version"] == "1.0.0" and cur["sha256"] == manifest_sha, cur


def test_push_without_promote_does_not_move_current(tmp_path, models_dir, tiny_mlp_v2_file,
                                                    pilotlight_bin):
    path, uri = new_store(tmp_path)
    push_model(uri, models_dir / "tiny_mlp.onnx", "tiny", "1.0.0", promote=False)
    assert (path / "tiny" / "versions" / "1.0.0" / "manifest.json").is_file()
    assert not (path / "tiny" / "current.json").exists(), "push without --promote promoted"
    push_model(uri, models_dir / "tiny_mlp.onnx", "tiny", "1.1.0", promote=True)
    push_model(uri, tiny_mlp_v2_file, "tiny", "2.0.0", promote=False)
    assert current(path, "tiny")["version"] == "1.1.0"


def test_versions_promote_rollback(tmp_path, models_dir, tiny_mlp_v2_file, pilotlight_bin):
    path, uri = new_store(tmp_path)
    v1, v2 = models_dir / "tiny_mlp.onnx", tiny_mlp_v2_file
    push_model(uri, v1, "tiny", "1.0.0", promote=True)
    push_model(uri, v2, "tiny", "2.0.0", promote=False)

    p = run_cli("model", "versions", "tiny", "--store", uri)
    assert p.returncode == 0, cli_output(p)
    assert "1.0.0" in p.stdout and "2.0.0" in p.stdout, cli_output(p)

    p = run_cli("model", "promote", "tiny", "2.0.0", "--store", uri)
    assert p.returncode == 0, cli_output(p)
    cur = current(path, "tiny")
    assert cur["version"] == "2.0.0", cur
    assert cur["sha256"] == sha256_file(path / "tiny" / "versions" / "2.0.0" / "manifest.json"), cur

    p = run_cli("model", "rollback", "tiny", "--store", uri)
    assert p.returncode == 0, cli_output(p)
    cur = current(path, "tiny")
    assert cur["version"] == "1.0.0", cur
    assert cur["sha256"] == sha256_file(path / "tiny" / "versions" / "1.0.0" / "manifest.json"), cur

    p = run_cli("model", "promote", "tiny", "9.9.9", "--store", uri)
    assert p.returncode != 0, cli_output(p)
    assert "9.9.9" in p.stdout + p.stderr, cli_output(p)
    assert current(path, "tiny")["version"] == "1.0.0"


def test_rollback_without_history_is_refused(tmp_path, models_dir, pilotlight_bin):
    path, uri = new_store(tmp_path)
    push_model(uri, models_dir / "tiny_mlp.onnx", "tiny", "1.0.0", promote=True)
    p = run_cli("model", "rollback", "tiny", "--store", uri)
    assert p.returncode != 0, cli_output(p)
    assert (p.stdout + p.stderr).strip(), "rollback refused without a message"
    assert current(path, "tiny")["version"] == "1.0.0"


def test_model_list(tmp_path, models_dir, pilotlight_bin):
    path, uri = new_store(tmp_path)
    for name in ("tiny_mlp", "digits"):
        push_model(uri, models_dir / (name + ".onnx"), name, "1.0.0", promote=True)
    p = run_cli("model", "list", "--store", uri)
    assert p.returncode == 0, cli_output(p)
    assert "tiny_mlp" in p.stdout and "digits" in p.stdout, cli_output(p)
    p = run_cli("model", "versions", "no_such_model", "--store", uri)
    assert p.returncode != 0, cli_output(p)
    assert "no_such_model" in p.stdout + p.stderr, cli_output(p)


def test_push_same_version_twice_is_refused(tmp_path, models_dir, tiny_mlp_v2_file,
                                            pilotlight_bin):
    path, uri = new_store(tmp_path)
    push_model(uri, models_dir / "tiny_mlp.onnx", "tiny", "1.0.0", promote=True)
    p = run_cli("model", "push", tiny_mlp_v2_file, "--name", "tiny", "--version", "1.0.0",
                "--store", uri)
    assert p.returncode != 0, "a version folder was overwritten:\n" + cli_output(p)
    assert (path / "tiny" / "versions" / "1.0.0" / "model.onnx").read_bytes() == \
        (models_dir / "tiny_mlp.onnx").read_bytes()


@pytest.mark.parametrize("case", ["missing_file", "not_onnx", "bad_version", "bad_name",
                                  "missing_name"])
def test_push_refusals(tmp_path, models_dir, pilotlight_bin, case):
    path, uri = new_store(tmp_path)
    src = models_dir / "tiny_mlp.onnx"
    name, version = "tiny", "1.0.0"
    if case == "missing_file":
        src = tmp_path / "does_not_exist.onnx"
    elif case == "not_onnx":
        src = tmp_path / "garbage.onnx"
        src.write_bytes(b"this is not an onnx model\x00\x01\x02" * 10)
    elif case == "bad_version":
        version = "../../escape"
    elif case == "bad_name":
        name = "../escape"
    args = ["model", "push", src, "--version", version, "--store", uri]
    if case != "missing_name":
        args += ["--name", name]
    p = run_cli(*args)
    out = p.stdout + p.stderr
    assert p.returncode != 0, cli_output(p)
    assert out.strip(), "refused without a message"
    if case == "missing_file":
        assert "does_not_exist.onnx" in out, cli_output(p)
    if case == "missing_name":
        assert "name" in out, cli_output(p)
    assert not list(tmp_path.rglob("escape*")), "a refused push wrote outside its folder"
    assert not list(path.glob("*/versions/*/model.onnx")), "a refused push left a version behind"


@pytest.mark.parametrize("args", [
    ["model", "push", "{model}", "--name", "n", "--version", "1", "--bogus-flag"],
    ["model", "list", "--bogus-flag"],
    ["model", "promote", "n", "1", "--bogus-flag"],
    ["serve", "--bogus-flag"],
    ["invoke", "f", "--data", "{{}}", "--bogus-flag"],
])
def test_bad_flag_exits_non_zero_naming_it(pilotlight_bin, models_dir, tmp_path, args):
    args = [a.format(model=models_dir / "tiny_mlp.onnx") for a in args]
    p = run_cli(*args, "--store", store_uri(tmp_path / "models"), cwd=tmp_path, timeout=30) \
        if args[0] == "model" else run_cli(*args, cwd=tmp_path, timeout=30)
    assert p.returncode != 0, cli_output(p)
    assert "bogus-flag" in p.stdout + p.stderr, cli_output(p)
    assert not (tmp_path / "models").exists(), "a command with a bad flag still did its work"


def test_unknown_subcommand_exits_non_zero(pilotlight_bin, tmp_path):
    p = run_cli("no-such-command", cwd=tmp_path, timeout=30)
    assert p.returncode != 0, cli_output(p)
    out = p.stdout + p.stderr
    assert "no-such-command" in out or "subcommand" in out.lower(), cli_output(p)


@pytest.mark.parametrize("args,mentions", [
    ([], ["serve", "model", "invoke"]),
    (["model"], ["push", "list", "versions", "promote", "rollback"]),
    (["model", "push"], ["--name", "--version", "--promote", "--store"]),
    (["model", "list"], ["--store"]),
    (["model", "versions"], ["--store"]),
    (["model", "promote"], ["--store"]),
    (["model", "rollback"], ["--store"]),
    (["serve"], ["--config", "--store", "--listen", "--state-dir", "--log-format", "--log-file"]),
    (["invoke"], ["--data", "--url"]),
])
def test_help(pilotlight_bin, tmp_path, args, mentions):
    p = run_cli(*args, "--help", cwd=tmp_path, timeout=30)
    assert p.returncode == 0, cli_output(p)
    out = p.stdout + p.stderr
    for word in mentions:
        assert word in out, "`pilotlight %s --help` does not mention %s:\n%s" % (
            " ".join(args), word, out)


# --------------------------------------------------------------------------------------
# serve without a config file
# --------------------------------------------------------------------------------------
def test_serve_without_config_serves_every_model(start_server):
    server = start_server(None)
    h = server.health()
    assert set(h["functions"]) == set(ALL_STORE_MODELS), h
    for name, f in h["functions"].items():
        assert f["state"] in ("cold", "loading", "warm"), f
    body = assert_ok(server.invoke("tiny_mlp", {"inputs": tiny_rows(1)}))
    assert body["model"] == "tiny_mlp" and body["version"] == "1.0.0"
    body = assert_ok(server.infer({"inputs": tiny_rows(2)}, params={"model": "tiny_mlp"}))
    assert shape_of(body["outputs"]) == [2, 4]
    body = assert_ok(server.invoke("multi_input", {"inputs": {"features": [[1, 1, 1, 1]],
                                                              "ids": [[2, 3]]}}))
    assert body["outputs"]["ids_sum"] == [[5]]


def test_defaults_push_then_serve_from_dot_models(server_factory, tmp_path, models_dir):
    work = tmp_path / "project"
    work.mkdir()
    p = run_cli("model", "push", models_dir / "tiny_mlp.onnx", "--name", "m", "--version", "1",
                "--promote", cwd=work)
    assert p.returncode == 0, cli_output(p)
    assert (work / "models" / "m" / "versions" / "1" / "model.onnx").is_file(), \
        "default store is not ./models"
    server = server_factory.start(None, store=None, cwd=work)
    assert set(server.health()["functions"]) == {"m"}
    body = assert_ok(server.invoke("m", {"inputs": tiny_rows(1)}))
    assert shape_of(body["outputs"]) == [1, 4]


# --------------------------------------------------------------------------------------
# invoke
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared_invoke_server(module_servers):
    return module_servers.shared({"functions": {"tiny_mlp": {"idle_timeout": "60s"}}})


@pytest.fixture
def invoke_server(shared_invoke_server):
    return shared_invoke_server.get()


def test_invoke_prints_the_body(invoke_server, tmp_path):
    server = invoke_server
    data = json.dumps({"inputs": tiny_rows(1)})
    p = run_cli("invoke", "tiny_mlp", "--data", data, "--url", server.url, timeout=60)
    assert p.returncode == 0, cli_output(p)
    body = json.loads(p.stdout)
    assert body["model"] == "tiny_mlp" and shape_of(body["outputs"]) == [1, 4]

    f = tmp_path / "body.json"
    f.write_text(data)
    p = run_cli("invoke", "tiny_mlp", "--data", "@%s" % f, "--url", server.url, timeout=60)
    assert p.returncode == 0, cli_output(p)
    assert json.loads(p.stdout)["outputs"] == body["outputs"]


@pytest.mark.parametrize("function,data,etype", [
    ("no_such_function", '{"inputs": [[1]]}', "not_found"),
    ("tiny_mlp", '{"inputs": [[1, 2]]}', "invalid_input"),
    ("tiny_mlp", '{"inputs": [[1, 2', "invalid_json"),
])
def test_invoke_error_status_exits_non_zero(invoke_server, function, data, etype):
    server = invoke_server
    p = run_cli("invoke", function, "--data", data, "--url", server.url, timeout=60)
    assert p.returncode != 0, cli_output(p)
    assert etype in p.stdout + p.stderr, "the error body is not printed:\n" + cli_output(p)


def test_invoke_unreachable_server_exits_non_zero(pilotlight_bin):
    p = run_cli("invoke", "tiny_mlp", "--data", '{"inputs": [[1]]}',
                "--url", "http://127.0.0.1:%d" % free_port(), timeout=60)
    assert p.returncode != 0, cli_output(p)
    assert (p.stdout + p.stderr).strip(), cli_output(p)

