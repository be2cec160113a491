"""The template: the part of fitquad to copy into a project of your own.

    model.py   PolynomialModel: nn.Linear over the features z, z², …, with its own feature scaling
    data.py    QuadraticDataModule: the noisy quadratic and its splits
    batches.py InMemoryBatches: the data module's batches, resumable, sliced from in-memory tensors
    module.py  QuadraticRegression: the LightningModule (automatic optimization, the textbook loop)
    fused.py   FusedQuadraticRegression: an opt-in subclass that takes several optimizer steps per batch

These files import torch, lightning, torchmetrics and numpy, and each other (relatively), nothing else of fitquad:
the theory, the callbacks, the commands and the input checks sit above them (README, "Layout"). Copy the folder,
and `InvalidInput` below comes with it.
"""


class InvalidInput(ValueError):
    """A value the user gave is out of range or inconsistent; the message is one line naming the option at fault.

    The `fitquad` command prints it as one line and exits with status 2; a script gets the exception."""
