"""LoRA / AdaLoRA editing (``tuning: lora | adalora``): peft adapters on the selected modules.

The adapters sit only on the ``nn.Linear`` modules that ``layers`` x ``rewrite_module_tmp``
select (a template naming a weight picks its module; one naming a module picks every
``nn.Linear`` under it); no other module is wrapped. They train with the same losses
(``implementation: fast | reference``) and the same breadth-first / depth-first loops as full
tuning; AdaLoRA's budget schedule (``update_and_allocate``) runs after every optimizer step
over ``total_step`` = epochs x mini-batches per epoch (depth-first: edits x ``num_epochs``),
and its orthogonality penalty is added to every mini-batch's gradient.

This module supplies the adapter tuning (:func:`adapter_tuning`) to the one editing path in
:mod:`.locft_main`, and peft's save / load / merge around it. The base weights are never
written: ``apply_locft_to_model`` returns the ``peft.PeftModel`` (``model.unload()`` /
:func:`remove_adapter` gives the base model back, ``with model.disable_adapter():`` runs it
without the edit; :func:`save_adapter` writes peft's own adapter format), or with
``lora_merge: true`` merges the adapter into the base weights and returns the plain model with
the original tensors in ``weights_copy`` (EasyEdit's restore: ``restore_weights``). If training
fails, the adapters are removed and the model is as it was.
"""
from __future__ import annotations

import logging
import math
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .errors import HparamsError, LocFTInputError
from .locft_hparams import LocFTHyperParams
from .tuning import Tuning

logger = logging.getLogger(__name__)

ADAPTER = "default"
HPARAMS_FILE = "locft_hparams.yaml"


def adapter_targets(model, params: Sequence[str], hp: LocFTHyperParams) -> List[str]:
    """Full names of the ``nn.Linear`` modules owning the selected ``params``, in a stable order.

    Parameters of other modules in the selection (norms, embeddings) get no adapter and stay
    frozen; a selection with no ``nn.Linear`` raises HparamsError."""
    modules = dict(model.named_modules())
    targets: List[str] = []
    skipped: List[str] = []
    for name in params:
        owner = name.rsplit(".", 1)[0]
        if isinstance(modules.get(owner), nn.Linear):
            if owner not in targets:
                targets.append(owner)
        else:
            skipped.append(name)
    if not targets:
        raise HparamsError(f"key 'rewrite_module_tmp': tuning {hp.tuning!r} puts adapters on "
                         f"nn.Linear modules, and {hp.templates} with layers {hp.layers} selects "
                         f"none (parameters: {skipped[:6]})")
    if skipped:
        logger.info("no adapter for %d selected non-Linear parameter(s), e.g. %s (frozen)",
                    len(skipped), skipped[:3])
    return targets


def total_steps(hp: LocFTHyperParams, n_edits: int) -> int:
    """The most optimizer steps the pipeline can take: AdaLoRA's ``total_step``."""
    if hp.pipeline == "depth_first":
        return n_edits * hp.num_epochs
    return hp.num_epochs * math.ceil(n_edits / hp.mini_batch_size)


def peft_config(hp: LocFTHyperParams, targets: Sequence[str], n_edits: int):
    """The ``LoraConfig`` / ``AdaLoraConfig`` for these hparams, matching exactly ``targets``."""
    from peft import AdaLoraConfig, LoraConfig

    pattern = "^(?:" + "|".join(re.escape(t) for t in targets) + ")$"  # full names, fullmatch
    common = dict(target_modules=pattern, lora_alpha=hp.lora_alpha,
                  lora_dropout=hp.lora_dropout, bias="none")
    if hp.tuning == "lora":
        return LoraConfig(r=hp.lora_rank, **common)
    if hp.tuning == "adalora":
        total = total_steps(hp, n_edits)
        tinit = int(hp.adalora_tinit * total)
        tfinal = int(hp.adalora_tfinal * total)
        if tinit >= total - tfinal:  # too few steps for the shares: budget from the start
            tinit, tfinal = 0, 0
        return AdaLoraConfig(init_r=hp.adalora_init_r, target_r=hp.adalora_target_r,
                             tinit=tinit, tfinal=tfinal, deltaT=hp.adalora_delta_t,
                             beta1=hp.adalora_beta1, beta2=hp.adalora_beta2,
                             orth_reg_weight=hp.adalora_orth_reg_weight, total_step=total,
                             **common)
    raise HparamsError(f"key 'tuning': {hp.tuning!r} is not an adapter tuning ('lora', 'adalora')")


def has_adapters(model) -> bool:
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTunerLayer

    return isinstance(model, PeftModel) or any(isinstance(m, BaseTunerLayer)
                                               for m in model.modules())


def _orth_penalty(peft_model, weight: float):
    """AdaLoRA's regulariser (as ``AdaLoraModel.forward`` adds it when given labels): mean over
    adapted modules of ||P P^T - I||_F + ||Q^T Q - I||_F, times ``weight``."""
    mats = [(n, p) for n, p in peft_model.base_model.model.named_parameters()
            if ("lora_A" in n or "lora_B" in n) and p.numel()]

    def penalty() -> torch.Tensor:
        total = 0.0
        for n, p in mats:
            cov = p @ p.T if "lora_A" in n else p.T @ p
            eye = torch.eye(*cov.size(), out=torch.empty_like(cov))
            total = total + torch.norm(cov - eye, p="fro")
        return weight * total / len(mats)

    return penalty


@contextmanager
def adapter_tuning(model, params: Dict[str, torch.nn.Parameter], hparams: LocFTHyperParams,
                   n_edits: int) -> Iterator[Tuning]:
    """Wrap ``model`` (in place) with a fresh adapter on the ``nn.Linear`` modules owning
    ``params`` and yield its tensors and hooks; ``output()`` is the ``PeftModel``. The base
    weights and the base parameters' ``requires_grad`` flags are untouched; if the block
    raises, the adapter is removed again."""
    from peft import get_peft_model

    targets = adapter_targets(model, list(params), hparams)
    config = peft_config(hparams, targets, n_edits)
    flags = {id(p): p.requires_grad for p in model.parameters()}
    was_training = model.training
    # the adapter's initial values come from `seed` (the global random state is left as it was)
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore", FutureWarning)  # is_gradient_checkpointing deprecation
        torch.manual_seed(hparams.seed)
        peft_model = get_peft_model(model, config, adapter_name=ADAPTER)
    try:
        masters = {n: p for n, p in model.named_parameters() if "lora_" in n}
        wrapped = sorted({n.split(".lora_")[0] for n in masters})
        assert wrapped == sorted(targets), (wrapped, targets)
        dropouts = [m for n, m in model.named_modules()
                    if ".lora_dropout." in n and isinstance(m, nn.Dropout)]
        after_step = extra = None
        if hparams.tuning == "adalora":
            # peft counts global_step from 0 (update before increment); after_step gets the
            # number of steps taken, so the first step is 0 here. (Passing 1-based counts
            # skipped the sensitivity update of the last step before the final mask and
            # failed with a KeyError when a run has a single step.)
            def after_step(steps: int) -> None:
                peft_model.base_model.update_and_allocate(steps - 1)
            if hparams.adalora_orth_reg_weight > 0:
                extra = _orth_penalty(peft_model, hparams.adalora_orth_reg_weight)
        yield Tuning(masters, dict, lambda: peft_model, after_step=after_step,
                     extra_loss=extra, train_mode=dropouts)
    except BaseException:
        remove_adapter(peft_model)
        _restore_flags(model, flags, was_training)
        raise
    _restore_flags(model, flags, was_training)
    for p in masters.values():
        p.grad = None
    peft_model.train(was_training)


def _restore_flags(model, flags: Dict[int, bool], was_training: bool) -> None:
    for p in model.parameters():
        if id(p) in flags:
            p.requires_grad_(flags[id(p)])
    model.train(was_training)


def merge_adapter(peft_model) -> Tuple[nn.Module, Dict[str, torch.Tensor]]:
    """Merge the adapter into the base weights and drop the adapter layers: returns
    ``(plain_model, {weight_name: original_tensor})`` for the merged weights."""
    base = peft_model.base_model.model
    originals = {n.replace(".base_layer.", "."): p.detach().clone()
                 for n, p in base.named_parameters() if ".base_layer." in n}
    merged = peft_model.merge_and_unload()
    _drop_config(merged)
    return merged, originals


def remove_adapter(peft_model) -> nn.Module:
    """Drop the adapter layers without merging: the base model, as before the edit."""
    base = peft_model.unload()
    _drop_config(base)
    return base


def _drop_config(model) -> None:
    if "peft_config" in getattr(model, "__dict__", {}):
        del model.peft_config


def save_adapter(peft_model, folder: Union[str, Path],
                 hparams: Optional[LocFTHyperParams] = None) -> Path:
    """Write the adapter in peft's format (``adapter_config.json`` +
    ``adapter_model.safetensors``; loadable by ``PeftModel.from_pretrained``) and, when
    given, the hparams it was trained with (``locft_hparams.yaml``)."""
    folder = Path(folder)
    peft_model.save_pretrained(str(folder))
    if hparams is not None:
        hparams.to_yaml(folder / HPARAMS_FILE)
    return folder


def load_adapter(model, folder: Union[str, Path], merge: bool = False):
    """Apply a saved adapter to ``model`` (in place). Returns ``(peft_model, {})``, or with
    ``merge`` the plain model with the adapter merged in and the originals of the merged
    weights: ``(model, weights_copy)``, like ``apply_locft_to_model``."""
    from peft import PeftModel

    if not (Path(folder) / "adapter_config.json").is_file():
        raise LocFTInputError(f"{folder}: no adapter_config.json (not a peft adapter folder)")
    peft_model = PeftModel.from_pretrained(model, str(folder), adapter_name=ADAPTER)
    peft_model.eval()
    if merge:
        return merge_adapter(peft_model)
    return peft_model, {}
