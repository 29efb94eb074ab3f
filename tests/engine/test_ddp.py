"""Multi-process training on the CPU: 2 gloo processes x 4 images = 1 process x 8 images."""

import pytest
import torch
from detectron2.engine import launch
from detectron2.modeling import build_model
from detectron2.utils import comm

from fcos_d2.engine import create_ddp_model
from tests.common_utils import tiny_batch, tiny_cfg

pytestmark = pytest.mark.slow  # two training processes

NUM_IMAGES = 8


def _one_step(images):
    """One SGD step of the tiny GroupNorm FCOS on this process's images; (params, mean losses)."""
    torch.manual_seed(0)
    model = create_ddp_model(build_model(tiny_cfg()).train(), broadcast_buffers=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = model(images)
    sum(losses.values()).backward()
    optimizer.step()
    mean = {k: sum(comm.all_gather(v.item())) / comm.get_world_size() for k, v in losses.items()}
    net = model.module if hasattr(model, "module") else model
    return {k: v.detach().clone() for k, v in net.state_dict().items()}, mean


def _worker(out_path):
    torch.set_num_threads(1)
    per_process = NUM_IMAGES // comm.get_world_size()
    rank = comm.get_rank()
    params, losses = _one_step(tiny_batch()[rank * per_process : (rank + 1) * per_process])
    if rank == 0:
        torch.save({"params": params, "losses": losses}, out_path)


def test_two_cpu_processes_take_the_same_step_as_one_with_the_whole_batch(tmp_path):
    out = str(tmp_path / "ddp.pth")
    launch(_worker, 2, dist_url="auto", args=(out,))
    ddp = torch.load(out, weights_only=False)
    single_params, single_losses = _one_step(tiny_batch())
    half_params, _ = _one_step(tiny_batch()[:4])

    for k, v in single_losses.items():
        assert abs(ddp["losses"][k] - v) <= 1e-5 * max(1.0, abs(v)), k
    worst = max((ddp["params"][k] - p).abs().max().item() for k, p in single_params.items())
    assert worst < 1e-6
    # sensitivity: training on only half of the images moves the weights measurably differently
    moved = max((half_params[k] - p).abs().max().item() for k, p in single_params.items())
    assert moved > 100 * max(worst, 1e-8)
