"""TensorBoard for real: the tensorboard server, started over a run's log folder, serves the scalars
the run logged (read back through its HTTP API, the one its web page uses)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import torch

from conftest import CONFIGS, only_run_folder, read_summary, read_train_losses
from fitquad.commands.cli import main


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_tensorboard_serves_the_logged_scalars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(CONFIGS / "lesson3.yaml"), "--trainer.max_steps", "20"])
    folder = only_run_folder(tmp_path, "lesson3")

    log = tmp_path / "tensorboard.log"
    with open(log, "w") as sink:
        # Port 0: the server picks a free port and says which in its first line.
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("tensorboard")), "--logdir", str(folder.parent)]
            + ["--host", "127.0.0.1", "--port", "0", "--load_fast", "false", "--reload_interval", "1"],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        tags: dict = {}
        while "train/loss" not in tags.get(folder.name, {}):
            assert time.monotonic() < deadline, log.read_text()
            assert server.poll() is None, log.read_text()
            time.sleep(0.5)
            address = re.search(r"http://127\.0\.0\.1:(\d+)/", log.read_text())
            if address is None:
                continue
            base = f"http://127.0.0.1:{address[1]}"
            try:
                tags = get_json(f"{base}/data/plugin/scalars/tags")
            except OSError:  # not serving yet
                continue

        def scalars(tag: str) -> list[list[float]]:
            query = urllib.parse.urlencode({"run": folder.name, "tag": tag})
            return get_json(f"{base}/data/plugin/scalars/scalars?{query}")  # [[wall time, step, value], ...]

        loss = scalars("train/loss")
        assert [step for _, step, _ in loss] == list(range(1, 21))  # every optimizer step
        torch.testing.assert_close(
            torch.tensor([value for _, _, value in loss]), torch.tensor(read_train_losses(folder))
        )
        summary = read_summary(folder)
        for name in "abc":
            assert scalars(f"params/{name}")[-1][2] == pytest.approx(summary["coefficients"][name], rel=1e-6)
        assert {"val/mse", "val/loss", "train/mse", "train/lr", "train/grad_norm"} <= set(tags[folder.name])
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
