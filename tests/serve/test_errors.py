"""The service's answers to errors of the model deployment: a model still loading or a dead
replica is a 503, anything else a 500 naming the replica's exception (Ray's errors built here
as a replica's call raises them, no cluster needed)."""

from ray.exceptions import RayTaskError

from fcos_d2.serve.app import Loading, _reason, _unavailable


def _from_replica(exc: BaseException) -> BaseException:
    # Ray's text of the error is the replica's traceback, which ends with the exception's
    traceback = f"Traceback (most recent call last):\n  ...\n{type(exc).__name__}: {exc}"
    return RayTaskError("detect", traceback, exc).as_instanceof_cause()


def test_a_loading_model_is_unavailable_and_says_so():
    error = _from_replica(Loading("loading"))
    assert _unavailable(error) and _reason(error) == "the model is loading"


def test_another_error_is_a_detection_failure_whatever_its_message_says():
    error = _from_replica(ValueError("Loading weights failed\nsecond line"))
    assert not _unavailable(error)
    assert _reason(error) == "detection failed: ValueError: Loading weights failed"
