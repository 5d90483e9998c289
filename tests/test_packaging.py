"""The wheel: built with ``python -m build``, installed into a fresh venv, used from an unrelated folder.

Checks that the bundled models and the paper's tables ship as package data (and the training logs and
in-progress weights do not), that the wheel stays under 25 MB, and that ``fbcnn-restore`` restores an
image with the default model from the installed copy, never from the checkout. Torch is not downloaded:
the venv sees the system site-packages and the wheel is installed with ``--no-deps --no-index``.
"""

from __future__ import annotations

import filecmp
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models import ZOO_MODELS
from tests.conftest import ROOT

MAX_WHEEL_BYTES = 25 * 1024 * 1024
SOURCES = ["pyproject.toml", "requirements.txt", "README.md", "main_restore_fbcnn.py", "main_demo_fbcnn.py"]
SOURCES += ["models", "data", "utils"]


def _env() -> dict[str, str]:
    """The environment of the installed tools: no PYTHONPATH (it could point at the checkout), one thread."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{cmd} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory) -> Path:
    """The packaged part of the checkout, copied so the build writes nothing into the checkout.

    model_zoo gets its top-level files only, plus decoys in logs/ and wip/ that must stay out of the wheel.
    """
    src = tmp_path_factory.mktemp("pkg") / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    (src / "model_zoo").mkdir()
    for path in (ROOT / "model_zoo").iterdir():
        if path.is_file():
            shutil.copy2(path, src / "model_zoo" / path.name)
    for decoy in ("wip/fbcnn_color_small_step1000.pth", "logs/decoy.train.log"):
        (src / "model_zoo" / decoy).parent.mkdir(exist_ok=True)
        (src / "model_zoo" / decoy).write_bytes(b"not shipped")
    return src


@pytest.fixture(scope="module")
def wheel(source_copy) -> Path:
    """``python -m build --no-isolation``: the sdist, then the wheel built from it."""
    if importlib.util.find_spec("build") is None:
        pytest.fail("the 'build' package is missing: python3 -m pip install -r requirements-dev.txt")
    dist = source_copy.parent / "dist"
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source_copy)], source_copy)
    wheels = list(dist.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _venv(path: Path) -> Path:
    """A fresh venv that sees the system site-packages (torch); its python runs the system pip."""
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(path)], check=True)
    return path / "bin" / "python"


def _where(python: Path, cwd: Path) -> dict[str, str]:
    """Where the venv's python imports the project from (run in ``cwd``)."""
    code = (
        "import json, main_restore_fbcnn, models, utils.utils_report as r\n"
        "from models import load_model, ZOO_MODELS\n"
        "print(json.dumps({'models': models.__file__, 'cli': main_restore_fbcnn.__file__,"
        " 'zoo': str(ZOO_MODELS[3]), 'zoo_gray': str(ZOO_MODELS[1]), 'paper': str(r.PAPER_DIR),"
        " 'paper_rows': len(r.load_paper_table(1))}))"
    )
    return json.loads(_run([str(python), "-c", code], cwd).stdout)


def test_wheel_contents_and_size(wheel) -> None:
    assert wheel.stat().st_size < MAX_WHEEL_BYTES, f"{wheel.name}: {wheel.stat().st_size / 2**20:.1f} MB"
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"model_zoo/{p.name}" for p in ZOO_MODELS.values()} | {"model_zoo/README.md", "main_restore_fbcnn.py"}
    expected.add("main_demo_fbcnn.py")
    expected |= {f"utils/paper_results/{p.name}" for p in (ROOT / "utils" / "paper_results").glob("*.csv")}
    expected |= {"models/__init__.py", "data/__init__.py", "utils/__init__.py", "model_zoo/__init__.py"}
    assert expected <= names, sorted(expected - names)
    assert not [n for n in names if n.startswith(("model_zoo/wip", "model_zoo/logs", "tests/", "experiments/"))]


def test_wheel_installs_and_restores_from_elsewhere(wheel, tmp_path) -> None:
    python = _venv(tmp_path / "venv")
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--no-cache-dir", str(wheel)], tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    venv = (tmp_path / "venv").resolve()

    where = _where(python, elsewhere)
    for key in ("models", "cli", "zoo", "zoo_gray", "paper"):
        assert Path(where[key]).resolve().is_relative_to(venv), f"{key} imported from {where[key]}, not the venv"
    assert where["paper_rows"] > 0
    for channels, key in ((3, "zoo"), (1, "zoo_gray")):  # the installed models are the checkout's
        assert filecmp.cmp(where[key], ZOO_MODELS[channels], shallow=False)

    restore = venv / "bin" / "fbcnn-restore"
    help_text = _run([str(restore), "--help"], elsewhere).stdout
    assert "usage: fbcnn-restore" in help_text and "--qf-mode" in help_text
    demo_help = _run([str(venv / "bin" / "fbcnn-demo"), "--help"], elsewhere).stdout  # --help needs no Gradio
    assert "usage: fbcnn-demo" in demo_help and "--share" in demo_help

    rng = np.random.default_rng(0)
    img = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(elsewhere / "photo.jpg", quality=30)
    result = _run([str(restore), "photo.jpg", "-o", "out", "--tile", "0"], elsewhere)
    assert Path(where["zoo"]).name in result.stderr and str(venv) in result.stderr  # the installed default model
    out = np.asarray(Image.open(elsewhere / "out" / "photo.png"))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img).mean() > 1  # the network changed the image


def test_editable_install_finds_the_models_in_the_source(source_copy, tmp_path) -> None:
    python = _venv(tmp_path / "venv")
    pip = [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--no-cache-dir"]
    cmd = [*pip, "--no-build-isolation", "-e"]
    _run([*cmd, str(source_copy)], tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _where(python, elsewhere)
    for key in ("models", "zoo", "paper"):
        assert Path(where[key]).resolve().is_relative_to(source_copy.resolve()), where[key]
    assert Path(where["zoo"]).is_file()
