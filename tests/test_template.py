"""The template stands alone: the core files the README names, copied into an empty folder where `import fitquad`
is impossible, train lesson 3 to its least-squares optimum with torch, lightning and torchmetrics alone, through
the README's own LightningCLI entry point."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import CONFIGS, REPO
from fitquad.core.data import QuadraticDataModule

CORE = REPO / "src" / "fitquad" / "core"
README = (REPO / "README.md").read_text()


def readme_section(title: str) -> str:
    """The README's section under `## <title>` (up to the next `## `)."""
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def files_to_copy() -> list[str]:
    """The core files the README's template section lists, as src/fitquad/core/<name>.py paths."""
    return re.findall(r"src/fitquad/core/(\w+\.py)", readme_section("The template: copy these files"))


def entry_point() -> str:
    """The README's runnable entry point: the template section's first python code block."""
    return re.search(r"```python\n(.*?)```", readme_section("The template: copy these files"), re.DOTALL).group(1)


@pytest.mark.slow
def test_the_core_files_alone_train_lesson3_to_its_least_squares_optimum(tmp_path: Path) -> None:
    names = files_to_copy()
    assert {"__init__.py", "model.py", "losses.py", "data.py", "batches.py", "module.py"} <= set(names)
    package = tmp_path / "quadfit"  # the README's name for the copied folder
    package.mkdir()
    for name in names:
        shutil.copy(CORE / name, package / name)
    (tmp_path / "train.py").write_text(entry_point())
    # `import fitquad` is impossible here: this file shadows any installed fitquad, and fails.
    (tmp_path / "fitquad.py").write_text('raise ImportError("the template must not need fitquad")\n')
    shutil.copy(CONFIGS / "lesson3.yaml", tmp_path / "lesson3.yaml")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PYTHONWARNINGS"] = "ignore"  # a copier's own run: Lightning's advice is not what this test is about

    def run(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    run("train.py", "fit", "--config", "lesson3.yaml")
    check = (
        "import json, sys\n"
        "from quadfit.module import QuadraticRegression\n"
        "module = QuadraticRegression.load_from_checkpoint('lightning_logs/version_0/checkpoints/last.ckpt')\n"
        "assert not [name for name in sys.modules if name.split('.')[0] == 'fitquad'], 'fitquad was imported'\n"
        "print(json.dumps(module.model.coefficients().tolist()))\n"
    )
    coefficients = np.array(json.loads(run("-c", check).stdout))
    # The least-squares optimum of lesson 3's points, in closed form (numpy), constant term first.
    data = QuadraticDataModule(**yaml.safe_load((CONFIGS / "lesson3.yaml").read_text())["data"])
    data.setup("fit")
    t, y = data.train_x.double().numpy(), data.train_y.double().numpy()
    design = np.vander(t, 3, increasing=True)
    optimum, *_ = np.linalg.lstsq(design, y, rcond=None)
    trained_mse, optimum_mse = np.mean((design @ coefficients - y) ** 2), np.mean((design @ optimum - y) ** 2)
    assert optimum_mse <= trained_mse <= 1.01 * optimum_mse
    np.testing.assert_allclose(coefficients, optimum, rtol=1e-3)


@pytest.mark.slow
def test_the_public_classes_load_the_core_alone() -> None:
    # `fitquad.QuadraticRegression` and `fitquad.QuadraticDataModule` load the core and nothing above it.
    probe = (
        "import sys, fitquad\n"
        "fitquad.QuadraticRegression, fitquad.QuadraticDataModule\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'fitquad'))\n"
    )
    loaded = json.loads(
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.replace("'", '"')
    )
    assert loaded == [
        "fitquad",
        "fitquad.core",
        "fitquad.core.batches",
        "fitquad.core.data",
        "fitquad.core.losses",
        "fitquad.core.model",
        "fitquad.core.module",
    ]
