"""LocFT (localized fine-tuning, breadth-first by default) as an EasyEdit method folder.

This folder is self-contained: it imports nothing of the package around it (only relative
imports inside it, plus torch, transformers, peft, yaml, tqdm and safetensors), so copying it
to ``easyeditor/models/locft/`` and adding ``ALG_DICT["LocFT"] = apply_locft_to_model`` is the
whole upstream change.

    from .locft import LocFTHyperParams, apply_locft_to_model
"""
from .errors import (CheckpointError, HparamsError, LocFTInputError, RequestError,
                     TrainingDiverged)
from .locft_hparams import ALG_NAME, LocFTHyperParams
from .locft_main import (apply_locft_to_model, edit, execute_adapter, execute_locft,
                         select_parameters)
from .modeling import restore_weights, weights_applied, write_weights
from .requests import validate_requests
from .training import TrainResult

__all__ = [
    "ALG_NAME", "LocFTHyperParams", "apply_locft_to_model", "execute_locft", "execute_adapter",
    "edit", "select_parameters", "restore_weights", "write_weights", "weights_applied",
    "validate_requests", "TrainResult", "LocFTInputError", "HparamsError", "RequestError",
    "CheckpointError", "TrainingDiverged",
]
