#!/usr/bin/env bash
# The tested version range: the non-slow tiny-model suite on other dependency sets than the
# main environment's, each in its own venv. A venv is made with --system-site-packages
# (torch and everything else come from the system, as the main suite has them) and
# --without-pip (pip is the system's; no old setuptools shadows the system's); the versions
# named below are installed into it and shadow the system's. The checkout under test is
# installed into each venv (editable, no dependencies), so the venv imports it and not
# wherever the system's editable install points.
#
#   bash .ci/matrix.sh            # every entry
#   bash .ci/matrix.sh oldest     # the entries named
#
# "oldest" must name the minimums of install_requires in setup.cfg (checked below).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd -P)

# name|what pip installs into the venv (pins, or --upgrade for the newest releases)
MATRIX=(
    "oldest|transformers==4.56.0 peft==0.18.0 tokenizers==0.22.0 huggingface_hub==0.34.0 accelerate==1.10.0"
    "easyedit-pin|transformers==5.5.4 peft==0.18.0 tokenizers==0.22.1 huggingface_hub==1.17.0"
    "newest|--upgrade transformers peft tokenizers huggingface_hub accelerate"
)
PYTEST=(python -m pytest -q -m "not slow" -p no:cacheprovider)

# the pins of "oldest" are the minimums setup.cfg declares
python - "${MATRIX[0]#*|}" <<'EOF'
import configparser, re, sys
from packaging.version import Version
cfg = configparser.ConfigParser(interpolation=None)
cfg.read("setup.cfg")
mins = dict(re.findall(r"^\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)\s*$",
                       cfg["options"]["install_requires"], re.M))
pins = dict(p.split("==") for p in sys.argv[1].split())
for name in ("transformers", "peft"):
    if Version(pins[name]) != Version(mins[name]):
        sys.exit(f"matrix: the oldest entry pins {name}=={pins[name]} but setup.cfg says "
                 f"{name}>={mins[name]}: make them agree")
EOF

tmp=$(mktemp -d "${TMPDIR:-/tmp}/locft-ci-matrix.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# torch stays the system's (a newer one from the registry would be the multi-GB CUDA build)
python -c "import torch; print('torch==' + torch.__version__)" >"$tmp/constraints.txt"

quiet_pip() {  # pip's exit status, without the lines about index folders that lack a package
    "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

versions() {  # the versions a python imports, one line
    "$1" - <<'EOF'
import importlib
names = ("transformers", "peft", "tokenizers", "huggingface_hub", "accelerate", "torch")
print(", ".join(f"{n} {importlib.import_module(n).__version__}" for n in names))
EOF
}

echo "matrix: the main suite ran on $(versions python)"
summary=()
total_passed=0 total_skipped=0
for entry in "${MATRIX[@]}"; do
    name=${entry%%|*} reqs=${entry#*|}
    if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
    t0=$(date +%s)
    venv="$tmp/$name"
    python -m venv --system-site-packages --without-pip "$venv"
    # shellcheck disable=SC2086  # reqs is a list of words
    quiet_pip "$venv/bin/python" -m pip install -q -c "$tmp/constraints.txt" $reqs
    quiet_pip "$venv/bin/python" -m pip install -q --no-deps -e "$repo"
    # from another folder, so that the current one on sys.path proves nothing
    (cd "$tmp" && "$venv/bin/python" - "$repo" $reqs <<'EOF'
import importlib, os, sys
repo = sys.argv[1]
import locft_easyedit
where = os.path.realpath(locft_easyedit.__file__)
if not where.startswith(repo + os.sep):
    sys.exit(f"matrix: locft_easyedit imported from {where}, not from the checkout {repo}")
print(f"matrix: locft_easyedit imported from {where}")
for pin in sys.argv[2:]:
    if "==" in pin:
        name, version = pin.split("==")
        got = importlib.import_module(name).__version__
        if got != version:
            sys.exit(f"matrix: {name} {got} imported, {version} installed")
EOF
    )
    line="$(versions "$venv/bin/python")"
    echo "matrix $name: $line"
    t1=$(date +%s)
    set +e
    (PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv" "$venv/bin/${PYTEST[0]}" "${PYTEST[@]:1}" \
        </dev/null 2>&1; echo "pytest exit status $?" >"$tmp/$name.rc") | tee "$tmp/$name.log"
    set -e
    rc=$(sed 's/[^0-9]//g' "$tmp/$name.rc")
    t2=$(date +%s)
    last=$(grep -E "^=* *[0-9]+ (passed|failed|skipped|deselected|error)" "$tmp/$name.log" \
        | tail -1 || true)
    passed=$(grep -oE "[0-9]+ passed" <<<"$last" | grep -oE "[0-9]+" || echo 0)
    skipped=$(grep -oE "[0-9]+ skipped" <<<"$last" | grep -oE "[0-9]+" || echo 0)
    if [ "$rc" != 0 ] || [ "$passed" = 0 ]; then
        # exit status 5 is pytest's "no tests ran": a failure here too
        echo "matrix $name: FAILED (pytest exit status $rc) on $line"
        exit 1
    fi
    summary+=("matrix $name: ok, $passed passed, $skipped skipped; setup $((t1 - t0)) s, tests $((t2 - t1)) s, wall $((t2 - t0)) s; $line")
    total_passed=$((total_passed + passed)) total_skipped=$((total_skipped + skipped))
done
[ ${#summary[@]} -gt 0 ] || { echo "matrix: no entry named $*"; exit 1; }
printf '%s\n' "${summary[@]}"
echo "matrix: $total_passed passed, 0 failed, $total_skipped skipped"
