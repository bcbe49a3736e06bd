"""pilotlight.yaml: the pinned shape is accepted (flow and block style, the listen address and
store taken from it, --store overriding it), and bad configs make `pilotlight serve` exit
non-zero with a message that names the key."""

import subprocess

import pytest

from support import (BIN, CHILD_ENV, assert_ok, cli_output, digits_rows, free_port, shape_of, store_uri,
                     tiny_rows, to_yaml)

GOOD_FUNCTION = {"model": "tiny_mlp", "min_instances": 0, "max_instances": 2, "concurrency": 4,
                 "idle_timeout": "60s", "max_queue": 64, "queue_timeout": "2s", "timeout": "30s"}


def with_function(**changes):
    spec = dict(GOOD_FUNCTION)
    spec.update(changes)
    return {"functions": {"tiny_mlp": spec}}


BAD = {
    "unknown_top_level_key": ({"bogus_key": 1, **with_function()}, ["bogus_key"]),
    "unknown_function_key": (with_function(max_instanses=2), ["max_instanses"]),
    "unknown_server_key": ({"server": {"max_body_byte": 100}, **with_function()},
                           ["max_body_byte"]),
    "negative_max_instances": (with_function(max_instances=-1), ["max_instances"]),
    "zero_concurrency": (with_function(concurrency=0), ["concurrency"]),
    "bad_idle_timeout": (with_function(idle_timeout="banana"), ["idle_timeout"]),
    "bad_queue_timeout": (with_function(queue_timeout="5 parsecs"), ["queue_timeout"]),
    "bad_timeout": (with_function(timeout="-3s"), ["timeout"]),
    "max_queue_not_a_number": (with_function(max_queue="lots"), ["max_queue"]),
    "min_above_max_instances": (with_function(min_instances=3, max_instances=1),
                                ["min_instances", "max_instances"]),
    "default_function_unknown": ({"default_function": "nope", **with_function()},
                                 ["default_function"]),
    "negative_max_body_bytes": ({"server": {"max_body_bytes": -1}, **with_function()},
                                ["max_body_bytes"]),
    "bad_listen": ({"server": {"listen": "not-an-address"}, **with_function()}, ["listen"]),
    "functions_not_a_map": ("functions: 5\n", ["functions"]),
    "malformed_yaml": ("functions:\n  tiny_mlp: {model: [unclosed\n", []),
}


def run_serve_expecting_failure(tmp_path, config_text, extra=(), listen=True, store=None):
    cfg = tmp_path / "pilotlight.yaml"
    cfg.write_text(config_text, encoding="utf-8")
    argv = [str(BIN), "serve", "--config", str(cfg), "--state-dir", str(tmp_path / "state")]
    if listen:
        argv += ["--listen", "127.0.0.1:%d" % free_port()]
    if store:
        argv += ["--store", store]
    argv += list(extra)
    try:
        return subprocess.run(argv, cwd=str(tmp_path), capture_output=True, text=True,
                              errors="replace", timeout=20, stdin=subprocess.DEVNULL,
                              env=CHILD_ENV)
    except subprocess.TimeoutExpired as e:  # subprocess.run has killed it (by PID)
        raise AssertionError("pilotlight serve accepted a bad config and kept running:\n%s\n%s"
                             % (config_text, (e.stderr or b"")[-2000:]))


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_is_refused_naming_the_key(tmp_path, store, case):
    config, keys = BAD[case]
    text = config if isinstance(config, str) else to_yaml(config) + "\n"
    p = run_serve_expecting_failure(tmp_path, text, store=store.uri)
    assert p.returncode != 0, "config accepted:\n%s\n%s" % (text, cli_output(p))
    out = p.stdout + p.stderr
    assert out.strip(), "refused without a message"
    if keys:
        assert any(k in out for k in keys), "message does not name %s:\n%s\n%s" % (
            " or ".join(keys), text, cli_output(p))


def test_missing_config_file_is_refused(tmp_path, store, pilotlight_bin):
    missing = tmp_path / "no_such_config.yaml"
    p = subprocess.run([str(BIN), "serve", "--config", str(missing), "--store", store.uri,
                        "--listen", "127.0.0.1:%d" % free_port()],
                       cwd=str(tmp_path), capture_output=True, text=True, errors="replace",
                       timeout=20, stdin=subprocess.DEVNULL, env=CHILD_ENV)
    assert p.returncode != 0, cli_output(p)
    assert "no_such_config.yaml" in p.stdout + p.stderr, cli_output(p)


PINNED = """\
server: {{listen: 127.0.0.1:{port}, max_body_bytes: 6291456, max_tensor_elements: 16777216}}
store: {store}
default_function: digits
functions:
  digits: {{model: digits, version: current, min_instances: 1, max_instances: 2, concurrency: 4, idle_timeout: 60s, max_queue: 64, queue_timeout: 2s, timeout: 30s}}
"""


def test_pinned_config_shape_is_accepted(server_factory, store):
    port = free_port()
    text = PINNED.format(port=port, store=store.uri)
    server = server_factory.start(text, store=None, listen=False, port=port)
    assert server.url.endswith(":%d" % port)
    f = server.wait_state("digits", "warm", timeout=30)  # min_instances: 1
    assert f["version"] == "1.0.0"
    assert set(server.health()["functions"]) == {"digits"}, "only listed functions are served"
    body = assert_ok(server.infer({"inputs": digits_rows(1)}))
    assert body["model"] == "digits" and shape_of(body["outputs"]) == [1, 10]
    r = server.invoke("tiny_mlp", {"inputs": tiny_rows(1)})
    assert r.status_code == 404, "a model in the store but not in the config is served"


def test_block_style_config_with_store_key(server_factory, store):
    config = {"store": store.uri,
              "functions": {"tiny_mlp": {"min_instances": 0, "idle_timeout": "1m30s",
                                         "queue_timeout": "250ms", "timeout": "1m"}}}
    server = server_factory.start(config, store=None)
    body = assert_ok(server.invoke("tiny_mlp", {"inputs": tiny_rows(1)}))
    assert body["version"] == "1.0.0"


def test_store_flag_overrides_config_store(server_factory, store, tmp_path):
    empty = tmp_path / "empty_store"
    empty.mkdir()
    config = {"store": store_uri(empty), "functions": {"tiny_mlp": {"min_instances": 0}}}
    server = server_factory.start(config, store=store.uri)
    assert_ok(server.invoke("tiny_mlp", {"inputs": tiny_rows(1)}))


def test_listen_flag_overrides_config_listen(server_factory):
    config = {"server": {"listen": "127.0.0.1:%d" % free_port()},
              "functions": {"tiny_mlp": {"min_instances": 0}}}
    server = server_factory.start(config)  # passes --listen with another free port
    assert_ok(server.invoke("tiny_mlp", {"inputs": tiny_rows(1)}))
