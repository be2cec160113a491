"""`fitquad compare`'s table: compare.csv and compare.md, a row per loss × setting (final loss and coefficients,
the loss's optimum, the steps to within 1% of it, and why a run diverged, if one did)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fitquad.commands.compare_grid import RunResult


def write_tables(results: list[RunResult], names: list[str], folder: Path, interrupted: str = "") -> str:
    """compare.csv and compare.md; returns the Markdown table. `interrupted` says what stopped the grid short (at the
    top of compare.md)."""
    csv_header = ["loss", "setting", "lr", "momentum", "dampening", "nesterov", "weight_decay", "final_loss"]
    csv_header += [f"final_{n}" for n in names] + ["optimum_loss"] + [f"optimum_{n}" for n in names]
    csv_header += ["steps_to_within_1pct", "diverged"]
    csv_rows = [csv_header]
    shown = list(reversed(names))  # w before b, a before b before c
    md_header = ["loss", "setting", "final loss", *[f"final {n}" for n in shown], "optimum loss", "steps to within 1%"]
    md_lines = [f"**{interrupted}**\n"] if interrupted else []
    md_lines += ["| " + " | ".join(md_header) + " |", "|" + "---|" * len(md_header)]
    for r in results:
        s, steps = r.setting, r.steps_to_within
        final = r.path[-1].tolist()
        row = [r.loss, s.name, "" if s.lr is None else s.lr, s.momentum, s.dampening, s.nesterov, s.weight_decay]
        row += [repr(r.path_loss[-1].item()), *map(repr, final), repr(r.optimum_loss)]
        row += [*map(repr, r.optimum.tolist()), "" if steps is None or r.diverged else steps, r.diverged or ""]
        csv_rows.append(row)
        final_shown = [f"{final[names.index(n)]:.4f}" for n in shown]
        md_row = [r.loss, s.name, f"{r.path_loss[-1].item():.4f}", *final_shown, f"{r.optimum_loss:.4f}"]
        md_row.append("diverged (below)" if r.diverged else "never" if steps is None else str(steps))
        md_lines.append("| " + " | ".join(md_row) + " |")
    md_lines += [f"\n{r.loss}, {r.setting.name}: {r.diverged}" for r in results if r.diverged]
    with (folder / "compare.csv").open("w", newline="") as file:  # csv quotes a name with a comma or a quote in it
        csv.writer(file, lineterminator="\n").writerows(csv_rows)
    markdown = "\n".join(md_lines) + "\n"
    (folder / "compare.md").write_text(markdown)
    return markdown
