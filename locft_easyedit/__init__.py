"""LocFT-BF (localized fine-tuning, breadth-first) for knowledge editing, EasyEdit-shaped.

    from locft_easyedit import LocFTHyperParams, apply_locft_to_model, load_default_model
"""
from .checkpoint import CheckpointError
from .locft_hparams import LocFTHyperParams
from .locft_main import apply_locft_to_model, execute_locft, restore_weights, select_parameters
from .models import load_default_model, load_model
from .requests import RequestError, load_dataset, load_requests, validate_requests
from .training import TrainingDiverged
from .easyedit import register as register_easyedit

# Register LocFT with EasyEdit when it is importable; a silent no-op without it.
register_easyedit()

__version__ = "0.1.0"

__all__ = [
    "LocFTHyperParams", "apply_locft_to_model", "execute_locft", "restore_weights",
    "select_parameters", "load_default_model", "load_model", "RequestError", "load_dataset",
    "load_requests", "validate_requests", "TrainingDiverged", "CheckpointError",
    "register_easyedit", "__version__",
]
