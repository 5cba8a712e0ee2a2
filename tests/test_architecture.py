"""The package's shape: the method folder is self-contained (an upstream PR is a copy plus one
ALG_DICT line), imports point one way with no cycles, and a wheel install runs the demo."""
from __future__ import annotations

import ast
import os
import shutil
import site
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "locft_easyedit"
METHOD = PACKAGE / "locft"
# what the method folder may import besides itself (plus the standard library);
# easyeditor only for the optional HyperParams base class
METHOD_DEPENDENCIES = {"torch", "transformers", "peft", "yaml", "tqdm", "safetensors",
                       "easyeditor"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path):
    """``(level, module, names)`` of every import statement, at any depth (lazy ones too)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield 0, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            yield node.level, node.module or "", [a.name for a in node.names]


def package_graph():
    """Module -> the package's modules it imports (relative and absolute, any depth)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges = set()
        for level, mod, names in imports_of(path):
            if level:
                base = here.rsplit(".", level - 1)[0] if level > 1 else here
                target = f"{base}.{mod}" if mod else base
            elif mod.startswith("locft_easyedit"):
                target = mod
            else:
                continue
            # `from . import x` / `from .locft import y`: a submodule when one exists
            for n in names or [""]:
                sub = f"{target}.{n}" if n else target
                edges.add(sub if sub in modules else target)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def test_no_import_cycles_anywhere_in_the_package():
    graph = package_graph()
    assert "locft_easyedit.locft.locft_main" in graph and len(graph) >= 20
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []


def test_method_folder_imports_nothing_of_the_package_around_it():
    stdlib = set(sys.stdlib_module_names)
    bad = []
    for path in sorted(METHOD.glob("*.py")):
        for level, mod, _ in imports_of(path):
            top = mod.split(".")[0]
            if level > 1 or (level == 0 and top not in stdlib | METHOD_DEPENDENCIES):
                bad.append(f"{path.name}: {'.' * level}{mod}")
    assert bad == []


def test_product_imports_the_method_never_the_reverse():
    graph = package_graph()
    method = {m for m in graph if m.startswith("locft_easyedit.locft")}
    assert method and all(graph[m] <= method for m in method)
    users = {m for m in graph if m not in method and graph[m] & method}
    assert {"locft_easyedit.cli", "locft_easyedit.locate", "locft_easyedit.evaluate",
            "locft_easyedit.easyedit", "locft_easyedit.patch"} <= users


FAKE_EASYEDIT = {
    "easyeditor/__init__.py": "",
    "easyeditor/util/__init__.py": "",
    "easyeditor/util/alg_dict.py": "ALG_DICT = {}\n",
    "easyeditor/util/hparams.py": textwrap.dedent('''
        class HyperParams:
            """Stands in for EasyEdit's base class."""
        '''),
    "easyeditor/models/__init__.py": "",
}

COPIED_RUN = textwrap.dedent('''
    import sys

    class Block:  # locft_easyedit must not be importable: the copy has to stand alone
        def find_spec(self, name, path=None, target=None):
            if name == "locft_easyedit" or name.startswith("locft_easyedit."):
                raise ImportError("blocked: " + name)

    sys.meta_path.insert(0, Block())
    import torch
    import tiny_fixture
    from easyeditor.models.locft import LocFTHyperParams, apply_locft_to_model
    from easyeditor.util.alg_dict import ALG_DICT
    from easyeditor.util.hparams import HyperParams

    ALG_DICT["LocFT"] = apply_locft_to_model
    assert issubclass(LocFTHyperParams, HyperParams)
    model, tok, facts = tiny_fixture.tiny_setup(16)
    hp = LocFTHyperParams.from_hparams(sys.argv[1])
    edited, weights_copy = ALG_DICT[hp.alg_name](model, tok, facts, hp, return_orig_weights=True,
                                                 progress=False)
    name = "model.layers.2.mlp.down_proj.weight"
    assert list(weights_copy) == [name]
    assert not any(m.startswith("locft_easyedit") for m in sys.modules)
    torch.save(dict(edited.named_parameters())[name].detach(), sys.argv[2])
    ''')

TINY_YAML = textwrap.dedent('''
    alg_name: LocFT
    model_name: tiny
    device: cpu
    layers: [2]
    rewrite_module_tmp: "model.layers.{}.mlp.down_proj.weight"
    lr: 1.0e-2
    num_epochs: 10
    mini_batch_size: 8
    preserve_weight: 1.0
    preserve_samples: 8
    ''')


def test_copied_method_folder_is_a_working_easyedit_method(tmp_path):
    """cp -r locft_easyedit/locft easyeditor/models/locft + one ALG_DICT line: the copy edits a
    tiny model, with locft_easyedit blocked from import, to the same tensor as the package."""
    for rel, text in FAKE_EASYEDIT.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    shutil.copytree(METHOD, tmp_path / "easyeditor" / "models" / "locft",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PACKAGE / "synthetic.py", tmp_path / "tiny_fixture.py")  # stands alone too
    (tmp_path / "run.py").write_text(COPIED_RUN)
    (tmp_path / "locft.yaml").write_text(TINY_YAML)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "run.py", "locft.yaml", "new.pt"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    copied = torch.load(tmp_path / "new.pt", weights_only=True)

    from locft_easyedit import LocFTHyperParams, apply_locft_to_model
    from locft_easyedit.synthetic import tiny_setup

    model, tok, facts = tiny_setup(16)
    before = model.model.layers[2].mlp.down_proj.weight.detach().clone()
    hp = LocFTHyperParams.from_hparams(tmp_path / "locft.yaml")
    edited, _ = apply_locft_to_model(model, tok, facts, hp, progress=False)
    ours = edited.model.layers[2].mlp.down_proj.weight.detach()
    assert not torch.equal(ours, before)
    assert torch.equal(copied, ours)


@pytest.mark.slow
def test_wheel_install_runs_the_demo_from_an_empty_folder(tmp_path, embedded):
    """A plain wheel (not editable) carries the shipped YAMLs and the demo edits; run from an
    empty folder with nothing of the source checkout importable, `locft-edit demo` works."""
    src, wheels = tmp_path / "src", tmp_path / "wheels"
    # build from a copy: setuptools' build/ folder would otherwise land in (and linger in) the
    # checkout, where stale files of an earlier layout could slip into the wheel
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "__pycache__", "benchmarks", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), str(src)], check=True,
                   capture_output=True, timeout=300)
    (wheel,) = wheels.glob("locft_easyedit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "locft_easyedit/hparams/smollm2-135m.yaml" in names
    assert "locft_easyedit/hparams/llama3-8b.yaml" in names
    assert "locft_easyedit/data/demo_edits.json" in names
    assert "locft_easyedit/locft/locft_main.py" in names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    empty = tmp_path / "empty"
    empty.mkdir()
    # -S: site-packages as plain paths, so the checkout's editable-install hook is not loaded
    path = os.pathsep.join([str(target)] + site.getsitepackages())
    env = {**os.environ, "PYTHONPATH": path}
    check = subprocess.run(
        [sys.executable, "-S", "-c",
         "import locft_easyedit.locft as m, locft_easyedit.locft.locft_hparams as h; "
         "print(m.__file__); print(h.shipped_hparams_dirs()); "
         "print(m.LocFTHyperParams.from_hparams('llama3-8b').layers)"],
        cwd=empty, env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr[-2000:]
    assert check.stdout.splitlines() == [
        str(target / "locft_easyedit" / "locft" / "__init__.py"),
        f"[PosixPath('{target / 'locft_easyedit' / 'hparams'}')]", "[22]"]
    demo = subprocess.run([sys.executable, "-S", "-m", "locft_easyedit", "--quiet", "demo",
                           "--n", "2"], cwd=empty, env=env, capture_output=True, text=True,
                          timeout=600)
    assert demo.returncode == 0, demo.stderr[-3000:]
    summary = demo.stdout.strip().splitlines()[-1]
    assert summary.startswith("reliability=1.00 "), demo.stdout
    assert list(empty.iterdir()) == []
