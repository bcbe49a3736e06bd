"""Fixtures for pilotlight's integration tests.

- ``pilotlight_bin``: the binary ($PILOTLIGHT_BIN, default build/asan/pilotlight); missing → fail.
- ``models_dir``: the generated models ($PILOTLIGHT_MODELS, default build/models); missing → fail.
- ``store`` (session): a model store built with the real CLI
  (`pilotlight model push build/models/X.onnx --name X --version 1.0.0 --promote --store …`)
  holding digits, tiny_mlp, cnn, multi_input, all_dtypes and sleep (support.make_sleep_model:
  a Run as long as the request asks) at 1.0.0 (current), plus tiny_mlp 2.0.0 (same weights,
  different bytes, not promoted). Tests must not modify it; use
  ``store_copy`` for a private, writable copy.
- ``start_server`` (function): ``start_server(config=None, extra_args=(), **options)`` starts
  `pilotlight serve` on a free loopback port (see support.ServerFactory.start) and returns a
  Server with ``.url``, ``.proc``, ``.log_text()`` …; teardown sends SIGTERM to every server
  it started (SIGKILL after 20 s) and fails the test unless each exited with its
  ``expect_exit`` (0 by default).
- ``module_servers`` (module): the same factory, for servers shared by a module's tests;
  ``module_servers.shared(config)`` restarts the shared server when a test crashed it (the
  crash is still reported at module teardown).
- ``s3`` (module): an S3-compatible server (s3support.S3Server: tests/integration/s3, needs
  `npm ci` there, done by tools/setup.sh) with the bucket ``models``, SigV4 verification and
  conditional PUTs on, data in a temporary folder; stopped at module teardown, which fails if
  it died during the module. Shared by the module's tests: call ``s3.reset()`` to forget
  earlier requests and faults. Needs neither the binary nor the generated models.

Every pilotlight process runs with LSAN_OPTIONS suppressing ONNX Runtime's own allocations
(lsan.supp) unless LSAN_OPTIONS already names suppressions.
"""

import os
import shutil
from pathlib import Path

import pytest

import s3support
import support


class Store:
    def __init__(self, path):
        self.path = Path(path)
        self.uri = support.store_uri(self.path)

    def version_dir(self, name, version):
        return self.path / name / "versions" / version


@pytest.fixture(scope="session")
def pilotlight_bin():
    b = support.BIN
    if not (b.is_file() and os.access(b, os.X_OK)):
        pytest.fail("pilotlight binary not found at %s: build it (cmake --preset asan && "
                    "cmake --build --preset asan) or set PILOTLIGHT_BIN" % b, pytrace=False)
    return b


@pytest.fixture(scope="session")
def models_dir():
    d = support.MODELS_DIR
    needed = [m + ".onnx" for m in support.STORE_MODELS] + ["digits_test.json"]
    missing = [n for n in needed if not (d / n).is_file()]
    if missing:
        pytest.fail("models missing in %s: %s; run /usr/bin/python3 tools/make_models.py "
                    "--out build/models or set PILOTLIGHT_MODELS" % (d, ", ".join(missing)),
                    pytrace=False)
    return d


def _tiny_mlp_v2(models_dir, out_dir):
    """tiny_mlp with a different doc_string: same graph and weights, different bytes/sha256."""
    import onnx

    m = onnx.load(str(models_dir / "tiny_mlp.onnx"))
    m.doc_string = (m.doc_string or "") + " (pilotlight integration tests: version 2.0.0)"
    path = out_dir / "tiny_mlp_v2.onnx"
    onnx.save(m, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_mlp_v2_file(models_dir, tmp_path_factory):
    return _tiny_mlp_v2(models_dir, tmp_path_factory.mktemp("tiny_v2"))


@pytest.fixture(scope="session")
def store(pilotlight_bin, models_dir, tmp_path_factory, tiny_mlp_v2_file):
    root = tmp_path_factory.mktemp("store") / "models"
    s = Store(root)
    for name in support.STORE_MODELS:
        support.push_model(s.uri, models_dir / (name + ".onnx"), name, "1.0.0", promote=True)
    support.push_model(s.uri, tiny_mlp_v2_file, "tiny_mlp", "2.0.0", promote=False)
    sleep = support.make_sleep_model(tmp_path_factory.mktemp("sleep_model") / "sleep.onnx")
    support.push_model(s.uri, sleep, "sleep", "1.0.0", promote=True)
    return s


@pytest.fixture
def store_copy(store, tmp_path):
    """A private copy of the session store that the test may modify."""
    dst = tmp_path / "store_copy" / "models"
    shutil.copytree(store.path, dst)
    return Store(dst)


def _finish(factory):
    problems = factory.stop_all()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def server_factory(store, tmp_path):
    factory = support.ServerFactory(tmp_path / "servers", store.uri)
    yield factory
    _finish(factory)


@pytest.fixture
def start_server(server_factory):
    return server_factory.start


@pytest.fixture(scope="module")
def module_servers(store, tmp_path_factory):
    factory = support.ServerFactory(tmp_path_factory.mktemp("module_servers"), store.uri)
    yield factory
    _finish(factory)


@pytest.fixture(scope="module")
def shared_server(request, module_servers):
    """One server per test module, started from that module's CONFIG (started again if a test
    crashed it)."""
    return module_servers.shared(request.module.CONFIG)


@pytest.fixture
def server(shared_server):
    return shared_server.get()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = s3support.S3Server(buckets=("models",))
    try:
        server.start(tmp_path_factory.mktemp("s3"))
    except s3support.S3SetupError as e:
        pytest.fail(str(e), pytrace=False)
    yield server
    died = not server.alive()
    code = server.stop()
    if died:
        pytest.fail("the S3 server exited during the module (status %s):\n%s"
                    % (code, server.log_text()[-4000:]), pytrace=False)
