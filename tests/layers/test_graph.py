"""topk_at_most eager and as a graph: the graph's count follows its input, not the trace's."""

import torch

from fcos_d2.layers import topk_at_most


def test_eager_keeps_the_order_when_there_are_at_most_k():
    values, order = topk_at_most(torch.tensor([0.25, 0.875, 0.125]), 5)
    assert values.tolist() == [0.25, 0.875, 0.125] and order.tolist() == [0, 1, 2]


def test_eager_keeps_the_k_best_by_decreasing_value():
    values, order = topk_at_most(torch.tensor([0.25, 0.875, 0.125, 0.5]), 2)
    assert values.tolist() == [0.875, 0.5] and order.tolist() == [1, 3]
    values, order = topk_at_most(torch.tensor([0.25, 0.875, 0.5]), 2)  # one more than k
    assert values.tolist() == [0.875, 0.5] and order.tolist() == [1, 2]


def _check_graph(fn):
    values, order = fn(torch.tensor([0.25, 0.75]))  # fewer than k: all, by decreasing value
    assert values.tolist() == [0.75, 0.25] and order.tolist() == [1, 0]
    values, order = fn(torch.tensor([0.125, 0.625, 0.375, 0.875, 0.75]))  # more than k: the best 3
    assert values.tolist() == [0.875, 0.75, 0.625] and order.tolist() == [3, 4, 1]
    values, order = fn(torch.zeros(0))
    assert values.shape == (0,) and order.shape == (0,)


def test_traced_count_follows_the_input_not_the_traced_one():
    traced = torch.jit.trace(lambda v: topk_at_most(v, 3), (torch.rand(7),))  # 7 > k at trace
    _check_graph(traced)


def test_scripted_takes_the_graph_form():
    scripted = torch.jit.script(topk_at_most)
    _check_graph(lambda v: scripted(v, 3))
