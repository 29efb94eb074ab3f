"""Configs as package data: found through fcos_d2.model_zoo in a clone and after pip install."""

import os
import subprocess
import sys

import pytest

from fcos_d2 import model_zoo
from tests.common_utils import REPO


def test_every_config_of_the_clone_is_in_the_model_zoo():
    in_clone = set()
    for root, _, files in os.walk(os.path.join(REPO, "configs")):
        in_clone |= {
            os.path.relpath(os.path.join(root, f), os.path.join(REPO, "configs")).replace(
                os.sep, "/"
            )
            for f in files
            if f.endswith((".yaml", ".py")) and "__pycache__" not in root
        }
    assert {"lazy/fcos_R_50_FPN_1x.py", "lazy/common/models/fcos.py"} <= in_clone
    assert len(in_clone) >= 10 and set(model_zoo.list_configs()) == in_clone


def test_get_config_reads_the_recipe_with_the_fcos_keys():
    cfg = model_zoo.get_config("configs/FCOS_R_50_FPN_1x.yaml", ["MODEL.FCOS.NUM_CLASSES", "7"])
    assert cfg.MODEL.META_ARCHITECTURE == "FCOS" and cfg.MODEL.FCOS.NUM_CLASSES == 7
    assert cfg.MODEL.RESNETS.DEPTH == 50 and cfg.SOLVER.IMS_PER_BATCH == 16  # from its _BASE_


def test_unknown_config_names_the_ones_there_are():
    with pytest.raises(ValueError, match=r"no config 'FCOS_R_51.yaml'.*FCOS_R_50_FPN_1x.yaml"):
        model_zoo.get_config_file("FCOS_R_51.yaml")
    with pytest.raises(ValueError, match="no config"):
        model_zoo.get_config_file("../../setup.py")  # nothing outside the config directory


@pytest.mark.slow
def test_a_non_editable_install_finds_its_configs_and_runs_its_commands(tmp_path):
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    build = tmp_path / "src"  # a copy, so that the clone's build/ is left alone
    files = subprocess.run(
        ["git", "-C", REPO, "ls-files", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for rel in files:
        src = os.path.join(REPO, rel)
        if os.path.isfile(src) and not os.path.islink(src):
            os.makedirs(build / os.path.dirname(rel), exist_ok=True)
            with open(src, "rb") as f, open(build / rel, "wb") as g:
                g.write(f.read())
    subprocess.run(pip + ["--target", str(target), str(build)], check=True, timeout=300)
    env = dict(os.environ, PYTHONPATH=str(target))
    code = (
        "import fcos_d2, fcos_d2.model_zoo as z\n"
        f"assert fcos_d2.__file__.startswith({str(target)!r}), fcos_d2.__file__\n"
        "print(z.get_config_file('FCOS_R_50_FPN_1x.yaml'))\n"
        "assert z.get_config('demo/FCOS_R18_shapes_demo.yaml').MODEL.RESNETS.DEPTH == 18\n"
        "assert z.get_config('lazy/fcos_R18_shapes_demo.py').model.head.num_classes == 3\n"
        "assert z.get_config('lazy/fcos_R_50_FPN_1x.py', ['train.max_iter=5']).train.max_iter == 5\n"
        f"assert z.list_configs() == {model_zoo.list_configs()!r}, z.list_configs()\n"
        "from detectron2.config import instantiate\n"
        "c = z.get_config('lazy/timm/fcos_efficientnet_b3_FPN_1x.py',"
        " ['model.backbone.bottom_up.pretrained=False'])\n"
        "assert type(instantiate(c.model).backbone.bottom_up).__name__ == 'TimmBackbone'\n"
    )
    outputs = []
    for argv in (
        ["-c", code],
        ["-m", "fcos_d2.benchmark", "--help"],
        ["-m", "fcos_d2.export", "--help"],
    ):
        res = subprocess.run(
            [sys.executable, *argv],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 0, (argv, res.stderr[-2000:])
        outputs.append(res.stdout)
    assert outputs[0].strip().startswith(str(target))  # the installed copy's config
    assert "usage" in outputs[1] and "usage" in outputs[2]
