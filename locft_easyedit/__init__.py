"""locft-easyedit: LocFT-BF (localized, breadth-first fine-tuning) for knowledge editing, as an
EasyEdit method (the folder :mod:`locft_easyedit.locft`) and the tool around it.

    from locft_easyedit import LocFTHyperParams, apply_locft_to_model, load_default_model

Importing the package registers LocFT with EasyEdit when EasyEdit is importable (a silent
no-op otherwise); the method folder itself never imports EasyEdit's editors.
"""
from ._version import __version__
from .datasets import load_dataset, load_requests
from .easyedit import register as register_easyedit
from .ledger import Ledger
from .locft import (CheckpointError, HparamsError, LocFTHyperParams, LocFTInputError,
                    RequestError, TrainingDiverged, apply_locft_to_model, execute_adapter,
                    execute_locft, restore_weights, select_parameters, validate_requests)
from .models import load_default_model, load_model

# Register LocFT with EasyEdit when it is importable; a silent no-op without it.
register_easyedit()

__all__ = [
    "LocFTHyperParams", "apply_locft_to_model", "execute_locft", "execute_adapter",
    "restore_weights", "select_parameters", "load_default_model", "load_model",
    "RequestError", "HparamsError", "LocFTInputError", "load_dataset", "load_requests",
    "validate_requests", "TrainingDiverged", "CheckpointError", "register_easyedit",
    "Ledger", "__version__",
]
