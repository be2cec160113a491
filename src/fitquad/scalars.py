"""Scalars for the logger during training: with TensorBoard, all of a step's values in one event.

Lightning's TensorBoardLogger.log_metrics writes one event per value, each serialised by the event
writer's background thread; on 2 cores that thread competes with training. One event holding all of a
step's values is the same data for TensorBoard and cost 68 µs instead of 362 µs for six values
(measured here), which made logging every 50 steps cost ~2% of the 20-point problem instead of ~12%.
Other loggers get their own log_metrics.
"""

from __future__ import annotations

from lightning.pytorch.loggers import Logger, TensorBoardLogger


def log_scalars(logger: Logger, metrics: dict[str, float], step: int) -> None:
    """Log `metrics` at `step`: one TensorBoard event, or the logger's own log_metrics."""
    # Imported here, as Lightning does: torch.utils.tensorboard takes 0.2 s to import, which every
    # `fitquad` command (even --help) would otherwise pay. (Already imported once a writer exists.)
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard import SummaryWriter

    writer = logger.experiment if isinstance(logger, TensorBoardLogger) else None
    if not isinstance(writer, SummaryWriter):  # another logger, or a rank other than 0 (no writer there)
        logger.log_metrics(metrics, step=step)
        return
    values = [Summary.Value(tag=tag, simple_value=float(value)) for tag, value in metrics.items()]
    writer._get_file_writer().add_summary(Summary(value=values), step)
