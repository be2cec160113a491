"""The commands of docs/, run by the tests page by page in the order each page prints them, as a reader would type
them in a fresh folder (the README's are in tests/test_readme.py): every `fitquad` command a CPU machine can run
ends as the page says (exit 0, no traceback), and some of what the text says beside them is checked."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from conftest import CONFIGS, REPO, run_fitquad

DOCS = REPO / "docs"
# What a command needs that the page assumes and a test folder has not, by a word in the command.
NEEDS_ELSEWHERE = {
    # A Ctrl-C mid-fit first: tests/test_faults.py signals the real command and resumes it, bit for bit.
    "interrupted.ckpt": "a run interrupted by Ctrl-C",
    "--trainer.accelerator gpu": "a GPU (tests/test_gpu.py, the GPU tier)",
}


def page_commands(text: str) -> list[list[str]]:
    """The `fitquad …` commands of a page's bash blocks, in order (continued lines joined, comments dropped); lines
    run by another program (torchrun, srun, docker, tensorboard, pip) are not fitquad's."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("fitquad ") and not any(word in line for word in NEEDS_ELSEWHERE):
                commands.append(shlex.split(line)[1:])
    return commands


def pages() -> list[Path]:
    return [page for page in sorted(DOCS.glob("*.md")) if page_commands(page.read_text())]


@pytest.mark.slow
@pytest.mark.parametrize("page", pages(), ids=lambda page: page.stem)
def test_every_command_of_a_docs_page_runs_in_the_order_printed(tmp_path, page) -> None:
    text = page.read_text()
    shutil.copytree(CONFIGS, tmp_path / "configs")
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    for name, block in re.findall(r"Copy this into `([\w.]+)`:\s*```\w*\n(.*?)```", text, re.DOTALL):
        (tmp_path / name).write_text(block)  # the page's own file, as the reader copies it
    outputs = []
    for args in page_commands(text):
        result = run_fitquad(*args, cwd=tmp_path)  # raises with the command's output unless it exits 0
        assert "Traceback" not in result.stderr, args
        outputs.append(result.stdout)
    said = "".join(outputs)
    # Some of what each page says beside its commands.
    if page.stem == "over-and-underfitting":
        assert "Lowest mean validation MSE at degree = 2" in said  # the draws' minimum at the true degree
        assert (tmp_path / "runs" / "capacity_draws" / "version_0" / "bias_variance.png").is_file()
    if page.stem == "landscapes-grid-lr-find":
        assert (tmp_path / "runs" / "sgd_article_grid" / "version_0" / "compare.md").is_file()
        assert "lr finder suggests lr =" in said and "2/λmax =" in said
    if page.stem == "your-data-and-python":
        assert "σ̂²" in said  # σ² estimated from the data
        assert (tmp_path / "runs" / "your_data_capacity" / "version_0" / "sweep.md").is_file()
    if page.stem == "processes-gpus-docker":
        assert "each of 2 processes trains on its own 10" in said
