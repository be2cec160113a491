"""The README's commands, run by the tests in the order the README prints them, as a reader would type them in a
fresh folder: every `fitquad` line of its bash blocks ends as the README says (exit 0), and what the text says
next to them is checked (the run folders it names, the metrics file, the resumed steps)."""

from __future__ import annotations

import re
import shlex
import shutil

import pytest

from conftest import CONFIGS, REPO, read_summary, run_fitquad

README = (REPO / "README.md").read_text()


def readme_commands() -> list[list[str]]:
    """Every `fitquad …` line of the README's bash blocks, in order, without its trailing comment; lines that need
    more than this machine (pip, TensorBoard's server) are not fitquad lines and are left out."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.DOTALL):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("fitquad "):
                commands.append(shlex.split(line)[1:])
    return commands


@pytest.mark.slow
def test_the_readmes_commands_run_in_the_order_printed(tmp_path) -> None:
    shutil.copytree(CONFIGS, tmp_path / "configs")
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    commands = readme_commands()
    assert len(commands) >= 10 and commands[-3][:3] == ["fit", "--config", "configs/lesson3_whiten.yaml"]
    for args in commands:
        result = run_fitquad(*args, cwd=tmp_path)  # raises with the command's output if it does not exit 0
        assert "Traceback" not in result.stderr, args
    # The resume block, as the text says: the first fit in version_0 (5 steps), its validation metrics beside it,
    # the resumed fit in version_1, ended at step 7 by the EarlyStopping state it resumed with.
    whiten = tmp_path / "runs" / "lesson3_whiten"
    assert read_summary(whiten / "version_0")["optimizer_steps"] == 5
    assert (whiten / "version_0" / "validate_metrics.json").is_file()
    resumed = read_summary(whiten / "version_1")
    assert resumed["optimizer_steps"] == 7 and resumed["ended_by"].startswith("EarlyStopping")
    # `fitquad fit --config runs/lesson3_whiten/version_0/config.yaml` runs it again, into the next version folder.
    run_fitquad("fit", "--config", "runs/lesson3_whiten/version_0/config.yaml", cwd=tmp_path)
    assert read_summary(whiten / "version_2")["optimizer_steps"] == 5
    # The quick start's demo lands where the README's TensorBoard line points.
    assert (tmp_path / "runs" / "lesson3" / "version_0" / "summary.json").is_file()
