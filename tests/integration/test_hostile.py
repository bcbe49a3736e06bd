"""The hostile-request corpus (hostile_corpus.py) against one server with the default limits:
each malformed or hostile request gets its 4xx (framing errors: 400 and the connection closed,
with nothing smuggled behind them answered), and a good request on a new connection still
gets 200 after every one. Valid requests at each limit (CONTROLS) get 200, and requests that
never finish get 408 within the 10 s whole-request limit (STALL_CASES, in parallel)."""

import shutil
import threading

import pytest

import hostile_corpus as corpus
from hostile_corpus import check_case, run_case
import rawhttp
import support

FUNCTIONS = ["tiny_mlp", "digits", "multi_input", "all_dtypes"]
# No `server:` block: the default limits are what is under test.
CONFIG = {"functions": {f: {"idle_timeout": "600s", "min_instances": 1} for f in FUNCTIONS}}


@pytest.fixture(scope="module")
def hostile_server(module_servers, store, tmp_path_factory):
    # A private copy of the store: the corpus sends promote/rollback requests (with traversal
    # names and versions) that must not touch the session's store even if one got through.
    copy = tmp_path_factory.mktemp("hostile_store") / "models"
    shutil.copytree(store.path, copy)
    env = dict(support.CHILD_ENV, PILOTLIGHT_ADMIN_TOKEN=corpus.ADMIN_TOKEN)
    return module_servers.shared(CONFIG, store=support.store_uri(copy), env=env)


@pytest.fixture
def server(hostile_server):
    return hostile_server.get()


GOOD_REQUEST = corpus.post(fields=b"Connection: close\r\n")


def assert_still_serving(server, after):
    assert server.alive(), "the server died after %s (exit %s)\n%s" % (
        after, server.proc.poll(), server.diagnostics(3000))
    ex = rawhttp.exchange(server.port, GOOD_REQUEST, timeout=10)
    assert ex.status == 200, "a good request on a new connection after %s: %s" % (after, ex.describe())
    assert "outputs" in ex.json(), ex.body[:300]


def test_corpus_is_large_and_unique():
    ids = [c.id for c in corpus.CASES + corpus.STALL_CASES + corpus.CONTROLS + corpus.AUTH_CASES
           + corpus.AUTH_CONTROLS]
    assert len(set(ids)) == len(ids), sorted(i for i in ids if ids.count(i) > 1)
    assert len(corpus.CASES) + len(corpus.STALL_CASES) >= 150


@pytest.mark.parametrize("case", corpus.CASES, ids=lambda c: c.id)
def test_hostile_request(server, case):
    parts, ex = run_case(server, case)
    problems = []
    for check in (lambda: check_case(case, ex, parts), lambda: assert_still_serving(server, case.id)):
        try:
            check()
        except AssertionError as e:
            problems.append(str(e))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("case", corpus.CONTROLS, ids=lambda c: c.id)
def test_valid_request_at_the_limit(server, case):
    parts, ex = run_case(server, case)
    assert ex.status == 200, "%s: expected 200, got %s" % (case.id, ex.describe())


def test_stalled_requests_get_408_within_the_request_limit(server):
    """Every STALL_CASES request at once (each alone would take 10 s)."""
    results = {}

    def one(case):
        try:
            results[case.id] = run_case(server, case)
        except Exception as e:  # reported below, with the others
            results[case.id] = e

    threads = [threading.Thread(target=one, args=(c,)) for c in corpus.STALL_CASES]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    failures = []
    for case in corpus.STALL_CASES:
        r = results.get(case.id)
        if isinstance(r, Exception) or r is None:
            failures.append("%s: %r" % (case.id, r))
            continue
        parts, ex = r
        try:
            check_case(case, ex, parts)
            assert ex.elapsed <= corpus.STALL_LIMIT + case.gap + 3, "%s: 408 after %.1fs" % (case.id, ex.elapsed)
        except AssertionError as e:
            failures.append(str(e))
    assert_still_serving(server, "the stalled requests")
    assert not failures, "\n".join(failures)
