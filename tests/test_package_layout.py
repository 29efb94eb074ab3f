"""The package's shape: what ``import fcos_d2`` does, and imports that only point one way."""

import ast
import os
import subprocess
import sys
from typing import Dict, Set

from tests.common_utils import REPO

PACKAGE = os.path.join(REPO, "fcos_d2")


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, REPO)[: -len(".py")].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _imports(path: str, name: str) -> Set[str]:
    """fcos_d2 modules ``path`` imports anywhere in its code (lazy imports included)."""
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            module = (
                (base + "." + node.module if node.module else base) if node.level else node.module
            )
            found.add(module)
            found |= {f"{module}.{a.name}" for a in node.names}  # `from . import x` names a module
    return {m for m in found if m == "fcos_d2" or m.startswith("fcos_d2.")}


def _graph() -> Dict[str, Set[str]]:
    paths = {}
    for root, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                paths[_module_name(os.path.join(root, f))] = os.path.join(root, f)
    graph = {name: _imports(path, name) & set(paths) - {name} for name, path in paths.items()}
    # Importing a.b.c runs the __init__ of a and a.b first: edges to those packages too, except
    # the importer's own (Python handles a package importing its submodules while it loads).
    for name, imported in graph.items():
        own = {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}
        for module in list(imported):
            parents = {module.rsplit(".", i)[0] for i in range(1, module.count(".") + 1)}
            imported |= (parents & set(paths)) - own - {name}
    return graph


def _cycle(graph: Dict[str, Set[str]]):
    state: Dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack + [node, nxt]
            if nxt not in state:
                found = visit(nxt, stack + [node])
                if found:
                    return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def test_no_import_cycle_inside_the_package():
    graph = _graph()
    assert "fcos_d2.checkpoint.layouts" in graph and graph["fcos_d2.modeling.meta_arch"]
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle():
    graph = _graph()
    graph["fcos_d2.checkpoint.layouts"] = graph["fcos_d2.checkpoint.layouts"] | {"fcos_d2.engine"}
    assert _cycle(graph) is not None


def test_the_layout_table_imports_nothing_of_fcos_d2():
    assert _graph()["fcos_d2.checkpoint.layouts"] == set()


def test_layers_import_nothing_of_fcos_d2_above_them():
    graph = _graph()
    layers = {name for name in graph if name.startswith("fcos_d2.layers")}
    assert layers >= {"fcos_d2.layers.nms", "fcos_d2.layers.graph", "fcos_d2.layers.frozen_bn"}
    for name in layers:
        assert graph[name] <= layers, f"{name} imports {graph[name] - layers}"


def test_the_algorithm_modules_hold_no_graph_or_device_branch():
    # Traced, scripted, GPU and CPU forms of an operation are chosen inside fcos_d2.layers.
    for name in ("targets", "losses", "postprocess", "core"):
        source = open(os.path.join(PACKAGE, "modeling", name + ".py")).read()
        markers = ("is_tracing", "is_scripting", "is_exporting", "exporting()", "device.type")
        for marker in markers + (".is_cuda", ".is_cpu"):
            assert marker not in source, f"modeling/{name}.py branches on {marker}"


def _run_in_a_fresh_process(code: str) -> None:
    """Run ``code`` in a new interpreter (nothing imported or registered yet); it must pass."""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]


def test_import_fcos_d2_registers_models_only():
    code = (
        "import sys\n"
        "from detectron2.data import DatasetCatalog\n"
        "before = set(DatasetCatalog.list())\n"
        "import fcos_d2\n"
        "from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY\n"
        "from detectron2.modeling import PROPOSAL_GENERATOR_REGISTRY\n"
        "assert set(DatasetCatalog.list()) == before, 'registered datasets'\n"
        "assert 'FCOS' in META_ARCH_REGISTRY and 'FCOS' in PROPOSAL_GENERATOR_REGISTRY\n"
        "assert 'build_fcos_resnet_fpn_backbone' in BACKBONE_REGISTRY\n"
        "assert 'build_fcos_timm_fpn_backbone' in BACKBONE_REGISTRY\n"
        "assert 'timm' not in sys.modules, 'imported timm (the optional extra)'\n"
        "assert 'ray' not in sys.modules and 'fastapi' not in sys.modules, 'the serve extra'\n"
        "heavy = [m for m in sys.modules if m.startswith(('fcos_d2.engine', 'fcos_d2.benchmark',"
        " 'fcos_d2.export', 'fcos_d2.predictor', 'fcos_d2.demo', 'fcos_d2.analyze',"
        " 'fcos_d2.serve', 'fcos_d2.slicing'))]\n"
        "assert not heavy, heavy\n"
        "assert fcos_d2.Predictor.__module__ == 'fcos_d2.predictor'\n"
    )
    _run_in_a_fresh_process(code)


def test_register_shapes_keeps_datasets_the_user_registered_first():
    code = (
        "from detectron2.data import DatasetCatalog\n"
        "DatasetCatalog.register('shapes_train', lambda: ['mine'])\n"
        "from fcos_d2.data import register_shapes\n"
        "register_shapes(replace=False)\n"
        "assert DatasetCatalog.get('shapes_train') == ['mine'], 'replaced'\n"
        "assert 'shapes_val' in DatasetCatalog.list()\n"
    )
    _run_in_a_fresh_process(code)


def test_previous_release_module_and_builder_names_warn_and_give_the_same_objects():
    code = (
        "import warnings\n"
        "warnings.simplefilter('error', DeprecationWarning)\n"
        "import fcos_d2.layers as layers\n"
        "import fcos_d2.modeling.proposal_generator as pg\n"
        "from detectron2.modeling import PROPOSAL_GENERATOR_REGISTRY\n"
        "assert PROPOSAL_GENERATOR_REGISTRY.get('FCOS') is pg.build_fcos_proposal_generator\n"
        "for old in ('import fcos_d2.modeling.frozen_bn', 'pg.FCOS'):\n"
        "    try:\n"
        "        exec(old)\n"
        "        raise SystemExit(old + ' gave no DeprecationWarning')\n"
        "    except DeprecationWarning as e:\n"
        "        assert 'fcos_d2.layers' in str(e) or 'build_fcos_proposal_generator' in str(e)\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        "from fcos_d2.modeling.frozen_bn import fold_frozen_batchnorm\n"
        "assert fold_frozen_batchnorm is layers.fold_frozen_batchnorm\n"
        "assert pg.FCOS is pg.build_fcos_proposal_generator\n"
    )
    _run_in_a_fresh_process(code)


def test_config_modules_of_the_previous_release_warn_and_give_the_config_packages_objects():
    code = (
        "import warnings\n"
        "import fcos_d2.config as config\n"
        "from fcos_d2.config import lazy, loader\n"
        "for old, new in (('fcos_d2.config_loader', 'fcos_d2.config'),\n"
        "                 ('fcos_d2.lazy_config', 'fcos_d2.config.lazy'),\n"
        "                 ('fcos_d2.modeling.class_thresholds', 'fcos_d2.config')):\n"
        "    with warnings.catch_warnings(record=True) as caught:\n"
        "        warnings.simplefilter('always')\n"
        "        module = __import__(old, fromlist=['*'])\n"
        "    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message)\n"
        "               for w in caught), (old, [str(w.message) for w in caught])\n"
        "import fcos_d2.config_loader as cl, fcos_d2.lazy_config as lc\n"
        "import fcos_d2.modeling.class_thresholds as ct\n"
        "assert cl.load_config is loader.load_config and cl.load_config is config.load_config\n"
        "assert lc.build_lazy_model is lazy.build_lazy_model\n"
        "assert ct.read_class_thresholds is config.read_class_thresholds\n"
    )
    _run_in_a_fresh_process(code)


def test_the_config_package_imports_nothing_of_fcos_d2_outside_it():
    graph = _graph()
    config = {
        name for name in graph if name.startswith("fcos_d2.config.") or name == "fcos_d2.config"
    }
    assert {"fcos_d2.config.keys", "fcos_d2.config.inference", "fcos_d2.config.loader"} <= config
    for name in config:
        assert graph[name] <= config | {"fcos_d2"}, f"{name} imports {graph[name] - config}"
