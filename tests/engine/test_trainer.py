"""FCOSTrainer's own construction for CPU processes against detectron2's DefaultTrainer's."""

from fcos_d2.engine import FCOSTrainer
from tests.common_utils import tiny_dataset, tiny_training_cfg


def _shape(trainer):
    attributes = {k: type(v).__name__ for k, v in vars(trainer).items()}
    return attributes, [type(h).__name__ for h in trainer._hooks], type(trainer._trainer).__name__


def test_cpu_process_construction_builds_what_default_trainer_builds(tmp_path):
    # For a CPU model in several processes FCOSTrainer repeats DefaultTrainer.__init__'s steps
    # with another DDP wrapper (detectron2's gives DDP a GPU index). In one process both ways
    # run: a detectron2 upgrade that changes its construction makes them differ here.
    with tiny_dataset(str(tmp_path), "trainer_shape_train"):
        cfg = tiny_training_cfg("trainer_shape_train", str(tmp_path / "out"))
        usual = FCOSTrainer(cfg)
        own = FCOSTrainer.__new__(FCOSTrainer)
        own._init_cpu_processes(cfg)
        assert _shape(own) == _shape(usual)
        assert own.cfg == usual.cfg  # the same worker-scaled config
        assert len(vars(usual)) >= 9 and "checkpointer" in vars(usual)
        assert (own.max_iter, own.start_iter) == (usual.max_iter, usual.start_iter) == (4, 0)
