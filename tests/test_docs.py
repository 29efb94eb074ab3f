"""The README and docs/ stay true: their commands parse, the config keys they name exist, the
key table matches the code, their links resolve, and the README stays short."""

import glob
import os
import re
import shlex

import pytest
from detectron2.config import CfgNode, get_cfg
from detectron2.engine import default_argument_parser

import fcos_d2
from fcos_d2.cli import build_parser
from tests.common_utils import REPO

DOCS = [os.path.join(REPO, "README.md"), os.path.join(REPO, "CHANGELOG.md")]
DOCS += sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))
KEY = re.compile(r"\b(?:MODEL|SOLVER|INPUT|DATASETS|DATALOADER|TEST)(?:\.[A-Z][A-Z0-9_]*)+")


def _text(path):
    with open(path) as f:
        return f.read()


def _full_cfg() -> CfgNode:
    cfg = get_cfg()
    fcos_d2.add_fcos_config(cfg)
    return cfg


def _has_key(cfg: CfgNode, key: str) -> bool:
    node = cfg
    for part in key.split("."):
        if not isinstance(node, CfgNode) or part not in node:
            return False
        node = node[part]
    return True


def _bash_commands(text: str):
    """Each command of the ```bash blocks (continuation lines joined)."""
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                yield line


def _documented(doc):
    return [(os.path.relpath(doc, REPO), c) for c in _bash_commands(_text(doc))]


COMMANDS = [item for doc in DOCS for item in _documented(doc)]


def test_the_readme_is_short_and_the_docs_have_commands():
    assert len(_text(os.path.join(REPO, "README.md")).splitlines()) <= 150
    assert sum(c.startswith("fcos-d2 ") for _, c in COMMANDS) >= 20


@pytest.mark.parametrize("where, command", COMMANDS)
def test_every_documented_command_parses(where, command):
    words = shlex.split(command.split(" | ")[0])
    if words[0] == "fcos-d2":
        build_parser().parse_args(words[1:])  # SystemExit(2) when it does not parse
    elif words[:2] == ["python", "train_net.py"]:
        default_argument_parser().parse_args(words[2:])
    elif words[0] == "make":
        targets = re.findall(r"^([\w-]+):", _text(os.path.join(REPO, "Makefile")), flags=re.M)
        assert set(words[1:]) <= set(targets), f"{where}: {command}"
    elif words[0].startswith("scripts/"):
        assert os.access(os.path.join(REPO, words[0]), os.X_OK), f"{where}: {command}"
    else:
        assert words[0] in ("pip", "git", "cd", "export", "python"), f"{where}: {command}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: os.path.relpath(p, REPO))
def test_every_config_key_named_exists(doc):
    cfg = _full_cfg()
    missing = sorted({k for k in KEY.findall(_text(doc)) if not _has_key(cfg, k)})
    assert not missing, f"{doc} names keys that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: os.path.relpath(p, REPO))
def test_every_relative_link_resolves(doc):
    for target in re.findall(r"\]\(([^)\s]+)\)", _text(doc)):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = os.path.normpath(os.path.join(os.path.dirname(doc), target.split("#")[0]))
        assert os.path.exists(path), f"{doc}: link {target} does not resolve"


def test_the_key_table_lists_every_fcos_and_timm_key_with_its_default():
    rows = dict(
        re.findall(r"^\| `(MODEL\.(?:FCOS|TIMM)\.[A-Z_]+)` \| `([^`]*)` \|", _text(
            os.path.join(REPO, "docs", "configs.md")), flags=re.M)
    )  # fmt: skip
    cfg = _full_cfg()
    expected = {
        f"MODEL.{tree}.{k}": v for tree in ("FCOS", "TIMM") for k, v in cfg.MODEL[tree].items()
    }
    assert set(rows) == set(expected)
    for key, text in rows.items():
        value = expected[key]
        if isinstance(value, str):
            assert text == f'"{value}"', key
        else:
            assert str(value).replace("'", '"') == text.replace("'", '"'), key


def test_no_document_speaks_of_how_the_project_is_organised():
    for doc in DOCS:
        text = _text(doc)
        for word in (r"\bissue \d", r"\bsession\b", r"\btask\b", r"\blent\b"):
            assert not re.search(word, text, flags=re.I), f"{doc}: {word}"
