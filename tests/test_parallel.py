"""deploy.parallel.pmap: the one thread pool (hosts, smoke URLs, tool probes)."""

import threading

import pytest

from deploy.parallel import pmap


def test_results_keep_the_items_order():
    assert pmap(lambda x: x * x, range(10), 3) == [x * x for x in range(10)]
    assert pmap(lambda x: x, [], 4) == []


def test_one_item_runs_inline_and_several_run_at_once():
    assert pmap(lambda _: threading.get_ident(), ["only"], 8) == [threading.get_ident()]
    both = threading.Barrier(2, timeout=30)   # passes only when the two calls overlap
    assert pmap(lambda x: (both.wait(), x)[1], ["a", "b"], 2) == ["a", "b"]


def test_at_most_workers_threads():
    used = pmap(lambda _: threading.get_ident(), range(12), 2)
    assert len(set(used)) <= 2 and threading.get_ident() not in used


def test_an_exception_in_fn_is_raised():
    def fn(x):
        if x == 3:
            raise ValueError("three")
        return x

    with pytest.raises(ValueError, match="three"):
        pmap(fn, range(6), 3)
