"""``LocFTHyperParams``: the settings of one LocFT editing run, read from YAML.

Shaped like an EasyEdit method's hyperparameters (``from_hparams(path)``, ``alg_name``,
``to_dict()``); it subclasses ``easyeditor.util.hparams.HyperParams`` when EasyEdit is
importable and a plain object otherwise, so it works with or without EasyEdit.

Every field is checked when the object is built: an unknown key, a wrong type, a value out
of its range, a field the chosen ``tuning`` cannot use or a wrong ``alg_name`` raises
:class:`~.errors.HparamsError` (a ``ValueError``) naming the key (and the file, when read from
one). Parsing only parses: ``model_name`` stays as written (an ``embedded:`` name is resolved
where the model is loaded).
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Union

import yaml

from .errors import HparamsError

try:  # subclass EasyEdit's base when it is there, so isinstance checks in EasyEdit pass
    from easyeditor.util.hparams import HyperParams as _Base  # type: ignore
except Exception:  # noqa: BLE001 - EasyEdit missing or broken: stand alone
    class _Base:  # type: ignore[no-redef]
        pass

ALG_NAME = "LocFT"
PIPELINES = ("breadth_first", "depth_first")
DTYPES = ("float32", "bfloat16", "float16")


def _doc(text: str, **kwargs):
    return field(metadata={"doc": text}, **kwargs)


@dataclass
class LocFTHyperParams(_Base):
    """Hyperparameters of LocFT (localized fine-tuning, breadth-first by default)."""

    alg_name: str = _doc("Must be 'LocFT'.", default=ALG_NAME)
    model_name: str = _doc(
        "A local model folder, or 'embedded:smollm2-135m' for the embedded default model "
        "(resolved to its cached folder where the model is loaded).",
        default="embedded:smollm2-135m")
    device: Optional[Union[int, str]] = _doc(
        "CUDA index (int), 'cpu', 'cuda:N', or null for auto (first GPU, else CPU).", default=None)
    layers: List[int] = _doc("Decoder layer indices to train (0-based).",
                             default_factory=lambda: [22])
    rewrite_module_tmp: Union[str, List[str]] = _doc(
        "Template(s) formatted with each layer index. A template names a parameter "
        "('model.layers.{}.mlp.down_proj.weight') or a module, whose parameters all train "
        "('model.layers.{}.mlp' = whole MLP, 'model.layers.{}' = whole decoder layer).",
        default="model.layers.{}.mlp.down_proj.weight")
    lr: float = _doc("Adam learning rate.", default=5e-4)
    weight_decay: float = _doc("Adam weight decay (the paper uses 0).", default=0.0)
    num_epochs: int = _doc(
        "Breadth-first: passes over all edits. Depth-first: steps on each edit.", default=25)
    mini_batch_size: int = _doc("Edits per optimizer step (the optimizer's batch).", default=100)
    batch_size: int = _doc(
        "EasyEdit's meaning: requests one editing call receives. batch_edit with "
        "batch_size >= N is one breadth-first run over all N edits; smaller is chunked "
        "lifelong editing. editor.edit() needs 1 (then it is the depth-first pipeline).",
        default=100000)
    loss_threshold: float = _doc(
        "A mini-batch whose loss is below it takes no step; an epoch whose mean loss is "
        "below it ends training.", default=1e-2)
    append_eos: bool = _doc("Append the tokenizer's EOS token to every target.", default=True)
    pipeline: str = _doc("'breadth_first' (LocFT-BF) or 'depth_first' (the old practice, "
                         "kept for the paper's ablation).", default="breadth_first")
    seed: int = _doc("Seed of the shuffling order; same seed and device give identical deltas.",
                     default=42)
    max_length: int = _doc("Most tokens of prompt + target; longer prompts lose their start. "
                           "EasyEdit's evaluation also truncates to it.", default=128)
    model_parallel: bool = _doc("Model spread over devices with device_map='auto'.",
                                default=False)
    dtype: Optional[str] = _doc(
        "The dtype the model computes in while edited ('float32', 'bfloat16', 'float16'): "
        "locft-edit, load_model and EasyEdit's BaseEditor (once LocFT is registered) load it "
        "so; a model handed to apply_locft_to_model in another dtype is refused. null: the "
        "checkpoint's own dtype where LocFT loads it, the model's as it is otherwise. Trained "
        "tensors always keep fp32 master copies; float16 trains with dynamic loss scaling.",
        default=None)
    implementation: str = _doc(
        "'fast' (frozen-prefix cache, target-only logits, length-grouped micro-batches) or "
        "'reference' (the straightforward loop, for comparison). Same results.",
        default="fast")
    prefix_cache_max_gb: Optional[float] = _doc(
        "Largest frozen-prefix cache kept (on the device of the first trained layer); above "
        "it the prefix is recomputed every step (a WARNING says what that costs). null: half "
        "the free memory of that device on CUDA, a quarter of the available host memory on "
        "the CPU.", default=None)

    # EasyEdit's BaseEditor and evaluation read alg_name, model_name, device, model_parallel,
    # batch_size, max_length (above) and fp16 (below) from any method's hparams; everything
    # else they look up with hasattr/getattr. Harmless for standalone use.
    fp16: bool = _doc("EasyEdit: BaseEditor loads the model in float16.", default=False)
    bf16: bool = _doc("Kept for configs that set it; EasyEdit's BaseEditor has no bfloat16 "
                      "option (use dtype with load_model instead).", default=False)

    # --- checkpoints (reliability) ---
    checkpoint_dir: Optional[str] = _doc(
        "Folder for the resumable checkpoint of a long run (null = no checkpoints). It holds "
        "the trained fp32 tensors, Adam state, the shuffling generator, epoch and mini-batch "
        "position and the losses so far, written atomically.", default=None)
    checkpoint_every_epochs: int = _doc(
        "Checkpoint after every N epochs (depth-first: every N requests); 0 = only by time.",
        default=1)
    checkpoint_every_minutes: Optional[float] = _doc(
        "Also checkpoint after the mini-batch that ends N minutes since the last one "
        "(null = only by epochs). A kill -9 loses at most one interval.", default=None)
    resume: bool = _doc(
        "Continue from the checkpoint in checkpoint_dir when there is one (a checkpoint of a "
        "different run is refused); false starts over and overwrites it.", default=True)
    conflicting_targets: str = _doc(
        "Two requests with the same prompt and different targets: 'warn' (one warning with "
        "their count and the first ones; both train, as the paper's authors do with their "
        "CounterFact file) or 'error' (refuse them before any work).", default="warn")

    # --- adapters (peft) ---
    # tuning: lora / adalora train peft adapters placed only on the nn.Linear modules that
    # layers x rewrite_module_tmp select (see adapters.py in this folder); same losses, same
    # breadth-first / depth-first loops, same lr / epochs / mini-batch fields.
    tuning: str = _doc(
        "'full' (train the selected tensors themselves), 'lora' or 'adalora' (train peft "
        "adapters on the selected nn.Linear modules; the base weights stay untouched).",
        default="full")
    lora_rank: int = _doc("LoRA rank r (tuning: lora).", default=8)
    lora_alpha: float = _doc("LoRA scaling alpha (lora: alpha / r; adalora: alpha / rank).",
                             default=16.0)
    lora_dropout: float = _doc("Dropout on the adapter input while training (0 <= p < 1).",
                               default=0.0)
    lora_merge: bool = _doc(
        "After training merge the adapter into the base weights and return the plain model "
        "(weights_copy then holds the originals); false returns the peft model with the base "
        "weights untouched (get the base back with model.unload()).", default=False)
    adalora_init_r: int = _doc("AdaLoRA: initial rank of every adapted module.", default=12)
    adalora_target_r: int = _doc("AdaLoRA: mean rank left after the budget schedule.",
                                 default=8)
    adalora_tinit: float = _doc(
        "AdaLoRA: warm-up share of the total steps before ranks are pruned (0 <= x < 1; "
        "total_step = epochs x mini-batches per epoch, depth-first: edits x num_epochs).",
        default=0.1)
    adalora_tfinal: float = _doc(
        "AdaLoRA: final share of the total steps trained at the final ranks (tinit + tfinal < 1).",
        default=0.2)
    adalora_delta_t: int = _doc("AdaLoRA: steps between two rank re-allocations (deltaT).",
                                default=1)
    adalora_beta1: float = _doc("AdaLoRA: EMA coefficient of the sensitivity.", default=0.85)
    adalora_beta2: float = _doc("AdaLoRA: EMA coefficient of the uncertainty.", default=0.85)
    adalora_orth_reg_weight: float = _doc(
        "AdaLoRA: weight of the orthogonality penalty on its P and Q matrices.", default=0.5)

    # --- locality (issue 10) ---
    preserve_weight: float = _doc(
        "Weight of the preservation loss KL(original || edited) of next-token distributions "
        "on generic text sampled from the unedited model from the fixed openings in "
        "regularizers.py of this folder (never evaluation data); 0 turns it off.", default=0.0)
    preserve_samples: int = _doc(
        "Generic texts sampled for the preservation loss (one per opening, cycling).",
        default=64)
    preserve_new_tokens: int = _doc("Tokens sampled after each generic opening.", default=16)
    preserve_batch: int = _doc(
        "Generic texts in the preservation term of each step (its cost: their positions go "
        "through the vocabulary projection every step).", default=4)
    preserve_topk: int = _doc(
        "The original distribution is kept as its top-k tokens plus one 'rest' bucket.",
        default=64)
    anchor_weight: float = _doc(
        "Weight of the L2 penalty sum((W - W_original)^2) on the trained tensors; 0 = off.",
        default=0.0)
    per_example_stop: bool = _doc(
        "Examples whose own loss is below loss_threshold give no gradient (their loss still "
        "counts towards the mini-batch and epoch means).", default=False)

    # --- locality beyond the preservation loss (issue 18; all off = the authors' method) ---
    null_space_energy: float = _doc(
        "Null-space projection: after every optimizer step, the change of each trained linear "
        "weight is projected off the top eigenvectors of its inputs' second moment on the "
        "local key_corpus that hold this share of its trace (e.g. 0.9), so generic inputs "
        "barely see the update (AlphaEdit's projection applied to fine-tuning; keys.py of "
        "this folder). 0 = off. Full tuning only.", default=0.0)
    null_space_rank: int = _doc(
        "Null-space projection with a fixed number of top directions removed instead of an "
        "energy share (wins over null_space_energy when > 0). 0 = off.", default=0)
    key_penalty_weight: float = _doc(
        "Soft key-covariance penalty: this weight x tr(dW C dW^T), the mean squared change of "
        "the trained linear modules' outputs over the key_corpus inputs (MEMIT's "
        "preservation term as a regularizer; dW from preserve_from or the run's start). "
        "0 = off. Full tuning only.", default=0.0)
    key_corpus: str = _doc(
        "Text whose inputs to the trained module define C: 'pydoc_data' (CPython's help "
        "topics, shipped with Python) or the path of a local UTF-8 text file. Never "
        "evaluation data. C is cached per (model, module, corpus, key_tokens) under "
        "$XDG_CACHE_HOME/locft_easyedit/keys.", default="pydoc_data")
    key_tokens: int = _doc("Tokens of key_corpus streamed to estimate C.", default=50000)
    neighbour_weight: float = _doc(
        "Weight of a preservation KL on neighbour prompts: each edit prompt with its subject "
        "replaced by the subjects of other requests of the same run (never evaluation data), "
        "answered greedily by the unedited model; the neighbours of a mini-batch's edits are "
        "preserved in the same step. Needs requests with a 'subject' found in the prompt. "
        "0 = off.", default=0.0)
    neighbour_samples: int = _doc("Neighbour prompts made per edit.", default=2)
    neighbour_new_tokens: int = _doc(
        "Tokens of the unedited model's greedy answer kept per neighbour prompt (the KL runs "
        "on the positions predicting them).", default=4)

    def __post_init__(self) -> None:
        validate(self)

    # --- EasyEdit's interface -------------------------------------------------------------
    @classmethod
    def from_hparams(cls, hparams_name_or_path: Union[str, Path]) -> "LocFTHyperParams":
        """Read a YAML (or JSON) file, given as a path (``.yaml`` may be left off) or as the
        name of a shipped file (``"llama3-8b"``, see :func:`shipped_hparams`). Only parses:
        ``model_name`` is kept as written."""
        path = find_hparams_file(hparams_name_or_path)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise HparamsError(f"{path}: not UTF-8 text ({exc})") from None
        try:
            config = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (yaml.YAMLError, json.JSONDecodeError) as exc:
            raise HparamsError(f"{path}: not valid YAML/JSON: {exc}") from None
        return cls.from_dict(config, source=str(path))

    @classmethod
    def from_dict(cls, config: Any, source: str = "<dict>") -> "LocFTHyperParams":
        if not isinstance(config, dict):
            raise HparamsError(f"{source}: hparams must be a mapping of keys to values, "
                             f"got {type(config).__name__}")
        config = dict(config)
        if "alg" in config and "alg_name" not in config:  # EasyEdit's legacy key
            config["alg_name"] = config.pop("alg")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(config) - known))
        if unknown:
            raise HparamsError(f"{source}: unknown key(s) {unknown}; known keys: {sorted(known)}")
        if config.get("alg_name", ALG_NAME) != ALG_NAME:
            raise HparamsError(f"{source}: alg_name is {config['alg_name']!r}; "
                             f"LocFTHyperParams needs alg_name: {ALG_NAME}")
        try:
            return cls(**config)
        except HparamsError as exc:
            raise HparamsError(f"{source}: {exc}") from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self, path: Union[str, Path]) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    # --- derived values --------------------------------------------------------------------
    @property
    def templates(self) -> List[str]:
        t = self.rewrite_module_tmp
        return [t] if isinstance(t, str) else list(t)

    @classmethod
    def field_docs(cls) -> dict:
        return {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(cls)}


# --- shipped files ---------------------------------------------------------------------------
def shipped_hparams_dirs() -> List[Path]:
    """Where shipped YAMLs live: the ``hparams/`` folder beside this method folder (package
    data of an installed wheel) or, in a source checkout, the repository's top-level
    ``hparams/`` (the one source that setuptools packages)."""
    here = Path(__file__).resolve().parent
    return [d for d in (here.parent / "hparams", here.parent.parent / "hparams") if d.is_dir()]


def shipped_hparams() -> List[str]:
    """Names of the shipped hparams files (without ``.yaml``)."""
    names = {p.stem for d in shipped_hparams_dirs() for p in d.glob("*.yaml")}
    return sorted(names)


def find_hparams_file(name_or_path: Union[str, Path]) -> Path:
    """The file a path names (``.yaml`` may be left off), else the shipped file of that name."""
    path = Path(str(name_or_path))
    if path.suffix not in (".yaml", ".yml", ".json"):
        path = Path(str(path) + ".yaml")
    if path.is_file():
        return path
    if len(path.parts) == 1:
        for folder in shipped_hparams_dirs():
            if (folder / path.name).is_file():
                return folder / path.name
    raise HparamsError(f"hparams file {str(path)!r} does not exist (shipped names: "
                       f"{', '.join(shipped_hparams()) or 'none found'})")


# --- validation ------------------------------------------------------------------------------
def _need(hp: "LocFTHyperParams"):
    def need(ok: bool, key: str, rule: str) -> None:
        if not ok:
            raise HparamsError(f"key {key!r}: {rule}, got {getattr(hp, key)!r}")
    return need


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin is Union:
        return any(_matches(value, h) for h in typing.get_args(hint))
    if origin in (list, List):
        (inner,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_matches(v, inner) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def validate(hp: LocFTHyperParams) -> None:
    """Check every field's type and range; raise HparamsError naming the key."""
    hints = typing.get_type_hints(type(hp))
    for f in dataclasses.fields(hp):
        value = getattr(hp, f.name)
        floaty = hints[f.name] in (float, Optional[float])
        if floaty and isinstance(value, str):
            try:  # YAML reads 5e-4 (no dot) as a string; EasyEdit accepts it, so do we
                value = float(value)
                setattr(hp, f.name, value)
            except ValueError:
                pass
        if not _matches(value, hints[f.name]):
            raise HparamsError(f"key {f.name!r}: expected {_type_name(hints[f.name])}, "
                             f"got {value!r} ({type(value).__name__})")
        if floaty and value is not None:
            try:
                setattr(hp, f.name, float(value))
            except OverflowError:
                raise HparamsError(f"key {f.name!r}: {value!r} is too large for a float") from None

    need = _need(hp)
    need(hp.alg_name == ALG_NAME, "alg_name", f"must be {ALG_NAME!r}")
    need(bool(hp.model_name.strip()), "model_name", "must name a model folder")
    need(len(hp.layers) > 0 and all(i >= 0 for i in hp.layers), "layers",
         "must be a non-empty list of layer indices >= 0")
    need(len(set(hp.layers)) == len(hp.layers), "layers", "must not repeat a layer")
    need(len(hp.templates) > 0 and all(isinstance(t, str) and t.strip() for t in hp.templates),
         "rewrite_module_tmp", "must be a non-empty template or list of templates")
    need(math.isfinite(hp.lr) and hp.lr > 0, "lr", "must be a finite number > 0")
    need(math.isfinite(hp.weight_decay) and hp.weight_decay >= 0, "weight_decay", "must be >= 0")
    need(hp.num_epochs >= 1, "num_epochs", "must be >= 1")
    need(hp.mini_batch_size >= 1, "mini_batch_size", "must be >= 1")
    need(hp.batch_size >= 1, "batch_size", "must be >= 1")
    need(math.isfinite(hp.loss_threshold) and hp.loss_threshold >= 0, "loss_threshold",
         "must be a finite number >= 0")
    need(hp.pipeline in PIPELINES, "pipeline", f"must be one of {PIPELINES}")
    need(hp.max_length >= 2, "max_length", "must be >= 2")
    need(hp.dtype is None or hp.dtype in DTYPES, "dtype", f"must be null or one of {DTYPES}")
    need(hp.implementation in ("fast", "reference"), "implementation",
         "must be 'fast' or 'reference'")
    need(hp.prefix_cache_max_gb is None or hp.prefix_cache_max_gb >= 0, "prefix_cache_max_gb",
         "must be null or >= 0")
    need(math.isfinite(hp.preserve_weight) and hp.preserve_weight >= 0, "preserve_weight",
         "must be a finite number >= 0")
    need(hp.preserve_samples >= 1, "preserve_samples", "must be >= 1")
    need(hp.preserve_new_tokens >= 1, "preserve_new_tokens", "must be >= 1")
    need(hp.preserve_batch >= 1, "preserve_batch", "must be >= 1")
    need(hp.preserve_topk >= 1, "preserve_topk", "must be >= 1")
    need(math.isfinite(hp.anchor_weight) and hp.anchor_weight >= 0, "anchor_weight",
         "must be a finite number >= 0")
    need(0 <= hp.null_space_energy < 1, "null_space_energy",
         "must be a share of the key energy in [0, 1) (0 = off)")
    need(hp.null_space_rank >= 0, "null_space_rank", "must be >= 0 (0 = off)")
    need(math.isfinite(hp.key_penalty_weight) and hp.key_penalty_weight >= 0,
         "key_penalty_weight", "must be a finite number >= 0")
    need(bool(hp.key_corpus.strip()), "key_corpus", "must name a corpus or a text file")
    need(hp.key_tokens >= 128, "key_tokens", "must be >= 128")
    need(math.isfinite(hp.neighbour_weight) and hp.neighbour_weight >= 0, "neighbour_weight",
         "must be a finite number >= 0")
    need(hp.neighbour_samples >= 1, "neighbour_samples", "must be >= 1")
    need(hp.neighbour_new_tokens >= 1, "neighbour_new_tokens", "must be >= 1")
    dev = hp.device
    need(dev is None or (isinstance(dev, int) and dev >= 0) or
         (isinstance(dev, str) and (dev in ("cpu", "cuda", "mps") or
                                    (dev.startswith("cuda:") and dev[5:].isdigit()))),
         "device", "must be null, a CUDA index >= 0, 'cpu', 'cuda:N' or 'mps'")
    # --- reliability: ranges the checks above left open, checkpoints, conflicting targets ---
    need(0 <= hp.seed < 2**63, "seed", "must be an integer from 0 to 2**63 - 1")
    need(not (hp.fp16 and hp.bf16), "bf16", "cannot be true together with fp16")
    need(not hp.fp16 or hp.dtype in (None, "float16"), "dtype",
         "must be null or float16 with fp16: true (EasyEdit then loads the model in float16)")
    need(hp.checkpoint_dir is None or bool(hp.checkpoint_dir.strip()), "checkpoint_dir",
         "must be null or a folder path")
    need(hp.checkpoint_every_epochs >= 0, "checkpoint_every_epochs", "must be >= 0")
    need(hp.checkpoint_every_minutes is None or (math.isfinite(hp.checkpoint_every_minutes)
                                                 and hp.checkpoint_every_minutes > 0),
         "checkpoint_every_minutes", "must be null or a finite number > 0")
    need(hp.checkpoint_dir is None or hp.checkpoint_every_epochs > 0
         or hp.checkpoint_every_minutes is not None, "checkpoint_every_epochs",
         "is 0 and checkpoint_every_minutes is null, so checkpoint_dir would never be written")
    need(hp.conflicting_targets in ("error", "warn"), "conflicting_targets",
         "must be 'error' or 'warn'")
    validate_adapters(hp)


# --- adapters (peft) -------------------------------------------------------------------------
TUNINGS = ("full", "lora", "adalora")


def validate_adapters(hp: LocFTHyperParams) -> None:
    """Ranges of the adapter fields (types are checked by :func:`validate`)."""
    need = _need(hp)
    need(hp.tuning in TUNINGS, "tuning", f"must be one of {TUNINGS}")
    need(hp.lora_rank >= 1, "lora_rank", "must be >= 1")
    need(math.isfinite(hp.lora_alpha) and hp.lora_alpha > 0, "lora_alpha", "must be > 0")
    need(0 <= hp.lora_dropout < 1, "lora_dropout", "must be in [0, 1)")
    need(hp.adalora_target_r >= 1, "adalora_target_r", "must be >= 1")
    need(hp.adalora_init_r >= hp.adalora_target_r, "adalora_init_r",
         f"must be >= adalora_target_r ({hp.adalora_target_r})")
    need(0 <= hp.adalora_tinit < 1, "adalora_tinit", "must be a share of the steps in [0, 1)")
    need(0 <= hp.adalora_tfinal < 1, "adalora_tfinal", "must be a share of the steps in [0, 1)")
    need(hp.adalora_tinit + hp.adalora_tfinal < 1, "adalora_tfinal",
         f"adalora_tinit + adalora_tfinal must be < 1 (tinit is {hp.adalora_tinit})")
    need(hp.adalora_delta_t >= 1, "adalora_delta_t", "must be >= 1")
    need(0 <= hp.adalora_beta1 < 1, "adalora_beta1", "must be in [0, 1)")
    need(0 <= hp.adalora_beta2 < 1, "adalora_beta2", "must be in [0, 1)")
    need(math.isfinite(hp.adalora_orth_reg_weight) and hp.adalora_orth_reg_weight >= 0,
         "adalora_orth_reg_weight", "must be >= 0")
    # every field works with every tuning, or is refused here for the ones it does not
    defaults = {f.name: f.default for f in dataclasses.fields(hp)}
    unused = {"full": [k for k in defaults if k.startswith(("lora_", "adalora_"))],
              "lora": [k for k in defaults if k.startswith("adalora_")],
              "adalora": ["lora_rank"]}[hp.tuning]
    for key in unused:
        need(getattr(hp, key) == defaults[key], key,
             f"is not used with tuning: {hp.tuning}; leave it at its default "
             f"{defaults[key]!r} or choose the tuning that uses it")
    need(hp.tuning != "adalora" or hp.checkpoint_dir is None, "checkpoint_dir",
         "cannot be used with tuning: adalora (its rank allocator's state is not saved, so a "
         "resumed run would differ); use tuning: lora or full, or checkpoint_dir: null")
    for key in ("null_space_energy", "null_space_rank", "key_penalty_weight"):
        need(hp.tuning == "full" or not getattr(hp, key), key,
             f"constrains W - W_original of the trained linear weights and works with tuning: "
             f"full only; with tuning: {hp.tuning} set it to 0")
    need(hp.tuning == "full" or hp.anchor_weight == 0, "anchor_weight",
         f"penalises W - W_original of the trained tensors and works with tuning: full only; "
         f"with tuning: {hp.tuning} set it to 0 (lora_rank and lora_alpha bound the adapter)")
