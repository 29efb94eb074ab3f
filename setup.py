"""fcos_d2: FCOS as a Detectron2 extension (pure Python)."""
from setuptools import find_packages, setup

setup(
    name="fcos_d2",
    version="0.1.0",
    description="FCOS (Fully Convolutional One-Stage object detection) for Detectron2",
    packages=find_packages(include=["fcos_d2", "fcos_d2.*"]),
    # the configs (configs/ in a clone links to fcos_d2/model_zoo/configs), for fcos_d2.model_zoo
    package_data={"fcos_d2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},
    python_requires=">=3.8",
    # the command line: fcos-d2 COMMAND (also python -m fcos_d2 COMMAND)
    entry_points={"console_scripts": ["fcos-d2=fcos_d2.cli:main"]},
    # torch and detectron2 are deliberately not listed: pip must never replace a user's own
    # (CUDA) builds. OpenCV (any flavour; only the demo data and pictures use it) is left to the
    # environment too, so as not to add a second cv2 next to a user's opencv-python.
    install_requires=["fvcore", "pycocotools", "tabulate"],
    # python -m fcos_d2.export (ONNX graphs, ONNX Runtime, int8 quantization); not needed by
    # import fcos_d2 or training. onnxscript: torch.onnx imports it.
    extras_require={
        "export": ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript"],
        # --format openvino (float32 / bfloat16 / NNCF int8), ExportedPredictor on OpenVINO
        "openvino": ["openvino>=2024.4", "nncf>=2.13"],
        # COCO evaluation without detectron2's compiled ops: fcos_d2's COCOEvaluator uses it
        "eval": ["faster-coco-eval>=1.6"],
        # MODEL.BACKBONE.NAME build_fcos_timm_fpn_backbone: any timm model with features_only
        "timm": ["timm>=1.0"],
        # fcos-d2 serve: the HTTP service (Ray Serve brings FastAPI and uvicorn)
        "serve": ["ray[serve]>=2.40"],
    },
)
