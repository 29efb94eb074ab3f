"""in_fresh_process: the result of a function run in its own process, and its failure named."""

import math

import pytest

from fcos_d2.benchmark.harness import in_fresh_process

pytestmark = pytest.mark.slow  # benchmark harness: spawns fresh Python processes


def test_result_comes_back_from_the_other_process():
    assert in_fresh_process(math.hypot, 3.0, 4.0) == 5.0


def test_failure_names_the_function_and_carries_the_traceback():
    message = r"(?s)sqrt failed in its process .*ValueError: math domain error"
    with pytest.raises(RuntimeError, match=message):
        in_fresh_process(math.sqrt, -1.0)
