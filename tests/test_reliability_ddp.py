"""Multi-process training on the CPU: 2 gloo processes x 4 images = 1 process x 8 images."""

import torch
from conftest import tiny_cfg
from detectron2.engine import launch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils import comm

from fcos_d2.engine import create_ddp_model

NUM_IMAGES = 8


def _inputs():
    """8 images of one odd size (so batches of 4 and of 8 get the same padding), 1-3 boxes each."""
    g = torch.Generator().manual_seed(3)
    batch = []
    for i in range(NUM_IMAGES):
        image = torch.randint(0, 256, (3, 61, 83), generator=g).float()
        n = 1 + i % 3
        xy = torch.rand(n, 2, generator=g) * torch.tensor([50.0, 30.0])
        wh = 8 + torch.rand(n, 2, generator=g) * 25
        inst = Instances((61, 83))
        inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], dim=1))
        inst.gt_classes = torch.tensor([(i + k) % 3 for k in range(n)])
        batch.append({"image": image, "instances": inst, "height": 61, "width": 83})
    return batch


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
    params, losses = _one_step(_inputs()[rank * per_process : (rank + 1) * per_process])
    if rank == 0:
        torch.save({"params": params, "losses": losses}, out_path)


def test_two_cpu_processes_take_the_same_step_as_one_with_the_whole_batch(tmp_path):
    out = str(tmp_path / "ddp.pth")
    launch(_worker, 2, dist_url="auto", args=(out,))
    ddp = torch.load(out, weights_only=False)
    single_params, single_losses = _one_step(_inputs())
    half_params, _ = _one_step(_inputs()[:4])

    for k, v in single_losses.items():
        assert abs(ddp["losses"][k] - v) <= 1e-5 * max(1.0, abs(v)), k
    worst = max((ddp["params"][k] - p).abs().max().item() for k, p in single_params.items())
    assert worst < 1e-6
    # sensitivity: training on only half of the images moves the weights measurably differently
    moved = max((half_params[k] - p).abs().max().item() for k, p in single_params.items())
    assert moved > 100 * max(worst, 1e-8)
