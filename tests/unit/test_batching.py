"""The embedded server's dynamic batcher: each caller gets its own rows, bad requests fail alone."""

import threading

import numpy as np
import pytest

from tfrec.serving.batching import Batcher
from tfrec.serving.models import ServingError


def doubling(calls):
    def run(inputs):
        calls.append(len(inputs["x"]))
        return {"y": np.asarray(inputs["x"]) * 2}
    return run


def test_requests_queued_together_run_as_one_call_and_get_their_own_rows():
    calls = []
    batcher = Batcher(doubling(calls), max_batch_size=8, timeout_micros=200_000, threads=1)
    futures = [batcher.submit({"x": np.array([[i], [10 + i]])}) for i in range(3)]
    results = [f.result(timeout=10)["y"] for f in futures]
    for i, y in enumerate(results):
        np.testing.assert_array_equal(y, [[2 * i], [2 * (10 + i)]])
    assert calls == [6]  # three requests of two rows, one call
    # the blocking call returns the same rows; a request as big as a batch runs on its own
    np.testing.assert_array_equal(batcher({"x": np.array([[4]])})["y"], [[8]])
    np.testing.assert_array_equal(batcher({"x": np.arange(8).reshape(8, 1)})["y"][:, 0], np.arange(8) * 2)


def test_a_failing_batch_reruns_each_request_alone_and_only_the_bad_one_fails():
    def picky(inputs):
        if (np.asarray(inputs["x"]) < 0).any():
            raise ValueError("negative input")
        return {"y": np.asarray(inputs["x"]) * 2}

    batcher = Batcher(picky, max_batch_size=8, timeout_micros=200_000, threads=1)
    good, bad = batcher.submit({"x": np.array([[1]])}), batcher.submit({"x": np.array([[-1]])})
    np.testing.assert_array_equal(good.result(timeout=10)["y"], [[2]])
    with pytest.raises(ValueError, match="negative input"):
        bad.result(timeout=10)


def test_a_full_queue_answers_unavailable():
    release = threading.Event()
    batcher = Batcher(lambda inputs: release.wait(10) and {"y": inputs["x"]}, max_batch_size=1, timeout_micros=0,
                      threads=1, max_enqueued=1)
    try:
        with pytest.raises(ServingError) as e:
            for _ in range(5):
                batcher.submit({"x": np.array([[1]])})
        assert e.value.code == "UNAVAILABLE"
    finally:
        release.set()
