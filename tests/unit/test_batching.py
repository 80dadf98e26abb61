"""The embedded server's dynamic batcher: each caller gets its own rows, bad requests fail alone, the
fields of BatchingParameters mean what they mean to TF Serving, and nothing stops a worker."""

import threading
import time

import numpy as np
import pytest
from google.protobuf import text_format

from tfrec.serving import protos
from tfrec.serving.batching import Batcher, BatchingOptions, batching_options
from tfrec.serving.errors import ServingError


def doubling(calls):
    def run(inputs):
        calls.append(len(inputs["x"]))
        return {"y": np.asarray(inputs["x"]) * 2}
    return run


def options(**kw) -> BatchingOptions:
    return BatchingOptions(**{"max_batch_size": 8, "batch_timeout_micros": 200_000, "num_batch_threads": 1, **kw})


def test_requests_queued_together_run_as_one_call_and_get_their_own_rows():
    calls = []
    batcher = Batcher(doubling(calls), options())
    pending = [batcher.submit({"x": np.array([[i], [10 + i]])}) for i in range(3)]
    results = [p.future.result(timeout=10)["y"] for p in pending]
    for i, y in enumerate(results):
        np.testing.assert_array_equal(y, [[2 * i], [2 * (10 + i)]])
    assert calls == [6]  # three requests of two rows, one call
    np.testing.assert_array_equal(batcher({"x": np.array([[4]])})["y"], [[8]])
    batcher.close()


def test_a_request_over_max_batch_size_is_refused_unless_large_batches_are_split():
    calls = []
    with pytest.raises(ServingError) as e:
        Batcher(doubling(calls), options(max_batch_size=4))({"x": np.arange(5).reshape(5, 1)})
    assert e.value.code == "INVALID_ARGUMENT" and "larger than maximum input batch size 4" in str(e.value)
    # with splitting: 10 rows in pieces of at most 3, answered in order
    split = Batcher(doubling(calls), options(max_batch_size=16, enable_large_batch_splitting=True,
                                             max_execution_batch_size=3, batch_timeout_micros=0))
    np.testing.assert_array_equal(split({"x": np.arange(10).reshape(10, 1)})["y"][:, 0], np.arange(10) * 2)
    assert calls and max(calls) <= 3 and sum(calls) == 10


def test_batches_are_padded_to_the_next_allowed_size_and_the_padding_is_dropped():
    calls = []
    batcher = Batcher(doubling(calls), options(allowed_batch_sizes=(2, 4, 8), batch_timeout_micros=0))
    np.testing.assert_array_equal(batcher({"x": np.array([[3], [4], [5]])})["y"], [[6], [8], [10]])
    assert calls == [4]  # 3 rows, run as 4: one copy of a row


def test_the_parameters_file_is_read_and_checked_as_tf_serving_checks_it():
    text = ("max_batch_size { value: 8 } batch_timeout_micros { value: 0 } num_batch_threads { value: 2 } "
            "allowed_batch_sizes: 4 allowed_batch_sizes: 8 enable_large_batch_splitting { value: true } "
            "max_execution_batch_size { value: 4 } pad_variable_length_inputs: true")
    o = batching_options(text_format.Parse(text, protos.BatchingParameters()))
    assert (o.max_batch_size, o.allowed_batch_sizes, o.execution_size, o.pad_variable_length_inputs) == \
        (8, (4, 8), 4, True)
    bad = text_format.Parse("max_batch_size { value: 8 } allowed_batch_sizes: 4", protos.BatchingParameters())
    with pytest.raises(ServingError, match="must match max_batch_size; last entry was 4; expected 8"):
        batching_options(bad)
    with pytest.raises(text_format.ParseError):
        text_format.Parse("max_batch_size: 8", protos.BatchingParameters())  # a wrapper, as TF Serving's proto


def test_a_failing_batch_reruns_each_request_alone_and_only_the_bad_one_fails():
    def picky(inputs):
        if (np.asarray(inputs["x"]) < 0).any():
            raise ValueError("negative input")
        return {"y": np.asarray(inputs["x"]) * 2}

    batcher = Batcher(picky, options())
    good, bad = batcher.submit({"x": np.array([[1]])}), batcher.submit({"x": np.array([[-1]])})
    np.testing.assert_array_equal(good.future.result(timeout=10)["y"], [[2]])
    with pytest.raises(ValueError, match="negative input"):
        bad.future.result(timeout=10)


def test_a_worker_survives_a_model_that_answers_nonsense():
    """Outputs that cannot be cut into rows used to kill the worker and hang the signature for ever."""
    answers = iter([{"y": 5}, {"y": np.array([[1]])}])  # a scalar cannot be sliced per request
    batcher = Batcher(lambda inputs: next(answers), options(batch_timeout_micros=0))
    with pytest.raises(ServingError) as e:
        batcher({"x": np.array([[1]])}, deadline=time.monotonic() + 10)
    assert e.value.code == "INTERNAL"
    np.testing.assert_array_equal(batcher({"x": np.array([[1]])}, deadline=time.monotonic() + 10)["y"], [[1]])


def test_a_request_whose_deadline_passes_in_the_queue_is_answered_and_dropped():
    release, calls = threading.Event(), []

    def slow(inputs):
        calls.append(len(inputs["x"]))
        release.wait(10)
        return {"y": inputs["x"]}

    batcher = Batcher(slow, options(max_batch_size=1, batch_timeout_micros=0))
    first = batcher.submit({"x": np.array([[1]])})  # holds the only worker
    time.sleep(0.1)
    with pytest.raises(ServingError) as e:
        batcher({"x": np.array([[2]])}, deadline=time.monotonic() + 0.2)
    assert e.value.code == "DEADLINE_EXCEEDED"
    release.set()
    first.future.result(timeout=10)
    batcher.close()
    for w in batcher.workers:
        w.join(timeout=10)
    assert calls == [1]  # the expired request never ran
    assert not any(w.is_alive() for w in batcher.workers)  # close() stopped the threads


def test_a_full_queue_answers_unavailable_and_a_closed_batcher_refuses():
    release = threading.Event()
    batcher = Batcher(lambda inputs: release.wait(10) and {"y": inputs["x"]},
                      options(max_batch_size=1, batch_timeout_micros=0, max_enqueued_batches=1))
    try:
        with pytest.raises(ServingError) as e:
            for _ in range(5):
                batcher.submit({"x": np.array([[1]])})
        assert e.value.code == "UNAVAILABLE"
    finally:
        release.set()
    batcher.close()
    with pytest.raises(ServingError) as e:
        batcher.submit({"x": np.array([[1]])})
    assert e.value.code == "UNAVAILABLE"
