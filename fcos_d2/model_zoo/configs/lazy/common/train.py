# detectron2's training settings (common/train.py of its model zoo) for the R-50 recipes:
# ImageNet (MSRA) R-50 initialisation, checkpoints every 10k iterations, a seed of -1 (drawn).
from detectron2.model_zoo import get_config

train = get_config("common/train.py").train
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.checkpointer.period = 10000
train.eval_period = 0  # evaluate at the end of training (the YAML TEST.EVAL_PERIOD 0)
train.seed = -1
