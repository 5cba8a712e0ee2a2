"""The method's exceptions. Everything the user's input causes derives from
:class:`LocFTInputError` (a ``ValueError``), so a caller such as a CLI can tell "fix your
input" (exit 2) from a bug (exit 1) by one ``except`` clause."""
from __future__ import annotations


class LocFTInputError(ValueError):
    """The input is wrong (requests, hparams, a layer or template, a checkpoint); the message
    names what and how to fix it. Nothing was changed."""


class HparamsError(LocFTInputError):
    """A hyperparameter is missing, of the wrong type, out of range, or unusable with the
    model or the tuning; the message names the key (and the file)."""


class RequestError(LocFTInputError):
    """A request (or a requests file) is malformed; the message names the index and field."""


class CheckpointError(LocFTInputError):
    """A checkpoint cannot be used (another run's, unreadable, or its folder unwritable)."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the model is left as it was."""
