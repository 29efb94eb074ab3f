"""A built model's inference settings: read and changed under detectron2's names, one object."""

import warnings

import pytest
import torch
from detectron2.export import scripting_with_instances
from detectron2.modeling import build_model
from detectron2.structures import Boxes

from fcos_d2.modeling.postprocess import FCOSPostprocess
from tests.common_utils import randomize_head, tiny_cfg


def _model(**fcos):
    cfg = tiny_cfg(num_classes=3)
    for key, value in fcos.items():
        cfg.MODEL.FCOS[key] = value
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    randomize_head(model, cls_bias=0.0, cls_std=0.05, box_bias=1.0, quality_std=0.05)
    return model, cfg


def _detect(model, h=67, w=93):
    gen = torch.Generator().manual_seed(3)
    image = torch.rand(3, h, w, generator=gen) * 255
    with torch.no_grad():
        return model([{"image": image}])[0]["instances"]


def test_settings_read_under_detectron2_names_are_the_config_keys():
    model, cfg = _model(SCORE_THRESH_TEST=0.2, NMS_THRESH_TEST=0.4, TOPK_CANDIDATES_TEST=77)
    assert isinstance(model.postprocess, FCOSPostprocess)
    assert model.test_score_thresh == pytest.approx(0.2)
    assert model.test_nms_thresh == pytest.approx(0.4)
    assert model.test_topk_candidates == 77
    assert model.max_detections_per_image == cfg.TEST.DETECTIONS_PER_IMAGE == 100


def test_setting_a_threshold_gives_the_detections_of_a_model_built_with_it():
    changed, _ = _model()
    built, _ = _model(SCORE_THRESH_TEST=0.3, NMS_THRESH_TEST=0.5)
    built.load_state_dict(changed.state_dict())
    changed.test_score_thresh = 0.3
    changed.test_nms_thresh = 0.5
    a, b = _detect(changed), _detect(built)
    assert len(a) > 0
    assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)
    assert torch.equal(a.scores, b.scores)
    assert changed.core.postprocess == built.core.postprocess  # the core's copy follows


def test_max_detections_keeps_the_best_ones():
    model, _ = _model()
    everything = _detect(model)
    assert len(everything) > 3
    model.max_detections_per_image = 3
    top = _detect(model)
    assert torch.equal(top.scores, everything.scores[:3])


def test_bad_values_are_refused_in_one_line_and_leave_the_settings_alone():
    model, _ = _model()
    before = model.postprocess
    with pytest.raises(ValueError, match=r"score_thresh=1\.5 must be in \[0, 1\)"):
        model.test_score_thresh = 1.5
    with pytest.raises(ValueError, match="max_detections=0"):
        model.max_detections_per_image = 0
    with pytest.raises(ValueError, match="legacy_conventions"):
        model.set_postprocess(legacy_conventions=True)
    assert model.postprocess == before


@pytest.mark.parametrize(
    "old, new, value",
    [
        ("score_thresh_test", "test_score_thresh", 0.25),
        ("nms_thresh_test", "test_nms_thresh", 0.45),
        ("topk_candidates_test", "test_topk_candidates", 17),
    ],
)
def test_previous_release_names_warn_and_read_and_set_the_same_setting(old, new, value):
    model, _ = _model()
    with pytest.warns(DeprecationWarning, match=new):
        setattr(model, old, value)
    assert getattr(model, new) == pytest.approx(value)
    with pytest.warns(DeprecationWarning):
        assert getattr(model, old) == pytest.approx(value)


def test_scripted_model_uses_the_settings_it_was_scripted_with():
    model, _ = _model()
    model.max_detections_per_image = 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # no alias read while scripting
        fields = {"pred_boxes": Boxes, "scores": torch.Tensor, "pred_classes": torch.Tensor}
        scripted = scripting_with_instances(model, fields)
    gen = torch.Generator().manual_seed(3)
    image = torch.rand(3, 67, 93, generator=gen) * 255
    with torch.no_grad():
        out = scripted([{"image": image}])[0]
    assert len(out.scores) == 2
