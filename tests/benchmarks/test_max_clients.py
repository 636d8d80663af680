"""The client-count probe: doubling then bisection, and what counts as fitting."""

import pytest
from support import benchmark_script, fail_chunks_above


@pytest.fixture(scope="module")
def max_clients():
    with benchmark_script("max_clients") as module:
        yield module


def test_doubles_then_bisects_to_the_largest_count_that_fits(max_clients):
    tried = []

    def trial(n):
        tried.append(n)
        return max_clients.Trial(n, n <= 100, 1.0, None)

    largest, trials = max_clients.probe("p", [], "auto", 32, 4096, 3, trial=trial)
    # 32, 64 fit, 128 does not; then 96 fits, 112 and 104 do not
    assert tried == [32, 64, 128, 96, 112, 104]
    assert largest == 96 and [t.fits for t in trials] == [True, True, False, True, False, False]


def test_stops_at_the_limit_and_reports_none_when_nothing_fits(max_clients):
    fits_all = lambda n: max_clients.Trial(n, True, 1.0, None)  # noqa: E731
    assert max_clients.probe("p", [], "auto", 3, 20, 3, trial=fits_all)[0] == 12
    fits_none = lambda n: max_clients.Trial(n, False, None, None)  # noqa: E731
    assert max_clients.probe("p", [], "auto", 3, 20, 3, trial=fits_none)[0] is None


def test_a_halved_chunk_does_not_fit(max_clients, monkeypatch, tmp_path):
    """A real quickstart round whose 4-client chunk runs out of memory (simulated) is retried
    in halves by the strategy, so the round completes, but 4 clients did not fit."""
    monkeypatch.chdir(tmp_path)
    fail_chunks_above(monkeypatch, 3)
    over = max_clients.try_clients("quickstart", [], "auto", 4)
    assert not over.fits and over.seconds is not None  # completed, in halves
    assert max_clients.try_clients("quickstart", [], "auto", 3).fits
