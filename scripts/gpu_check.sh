#!/usr/bin/env bash
# The GPU check (issue "Results II", item 6): one prepared script, under 8 minutes on one GPU.
#
#   1. the CUDA-only tests                      pytest -m cuda (tests that need a CUDA device)
#   2. scripts/bench_step.py --device cuda      Pyro SVI step / the same loss in plain PyTorch
#   3-5. training throughput of ResNet-18 (32x32), images/s: fp32, bf16, bf16 + train.compile
#   6. a one-epoch ResNet-18 BayesNCL run on the CIFAR-10 JPEG copy (unpacked from the archive
#      when its folder is missing; the first run decodes its 60,000 JPEGs, about 20 s on 2 CPU
#      cores, then reads the cache)
#   7. bayesncl-eval of that run (linear probe, SC)
#   8. data feed: images/s from the on-disk image store vs from an in-memory tensor
#
# It prints one Markdown table (check | result | seconds | status) and writes it to --out, or to
# $OUT/gpu_check.md when OUT is set. Every step has its own time limit, cut to what is left of
# the 8-minute budget (15 minutes in the dry run); steps 1-5 also leave RESERVE_S of it to the run
# and its evaluation (the rows the check is for). A step that fails or runs out of time is marked
# in the table and the script goes on, exiting 1 at the end if any step did not pass.
#
# The dry run trains on a copy of the data root cut to 8 training and 4 test images per class
# (links to the files, in the work folder) for at most 4 steps, whatever the data root holds:
# the full CIFAR-10 copy at the default data root takes no longer than the test's tiny archive.
#
#   scripts/gpu_check.sh                    # on a machine with a CUDA GPU
#   scripts/gpu_check.sh --cpu-dry-run      # the same steps on CPU at tiny sizes (the test suite runs this)
#
# Options: --archive FILE (default ../shared/data/cifar10-jpeg.tar.gz, beside the checkout),
# --data-root DIR (the unpacked copy; default ~/.cache/bayesncl_pyro/datasets/cifar10-jpeg),
# --work DIR (logs and run directories; default a new temporary folder), --out FILE.
# PYTHON picks the interpreter (default .venv/bin/python when there is one, else python3). Where
# the project is not installed, the checkout is put on the path as the package installs it
# (bayesncl_pyro with models/ and guides/ under it); wheels in .whl/ (e.g. pyro-ppl and pyro-api,
# on a machine that cannot reach a package index) are installed into the work folder first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY_RUN=0
ARCHIVE="$ROOT/../shared/data/cifar10-jpeg.tar.gz"
DATA_ROOT="$HOME/.cache/bayesncl_pyro/datasets/cifar10-jpeg"
WORK=""
TABLE_FILE="${OUT:+$OUT/gpu_check.md}"
BUDGET_S=470

while [[ $# -gt 0 ]]; do
  case "$1" in
    --cpu-dry-run) DRY_RUN=1 ;;
    --archive) ARCHIVE="$2"; shift ;;
    --data-root) DATA_ROOT="$2"; shift ;;
    --work) WORK="$2"; shift ;;
    --out) TABLE_FILE="$2"; shift ;;
    -h|--help) sed -n '2,31p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "error: unknown option $1; allowed: --cpu-dry-run, --archive FILE, --data-root DIR, --work DIR, --out FILE" >&2
       exit 2 ;;
  esac
  shift
done

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
WORK="${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}"
mkdir -p "$WORK"
cd "$ROOT"
export PYTHONUNBUFFERED=1

# ----------------------------------------------------------------------------- the environment
if compgen -G "$ROOT/.whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/wheels" "$ROOT"/.whl/*.whl
  export PYTHONPATH="$WORK/wheels${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PYTHON" -c "import bayesncl_pyro.models" 2>/dev/null; then
  mkdir -p "$WORK/site/bayesncl_pyro"
  for entry in "$ROOT"/bayesncl_pyro/*; do ln -sfn "$entry" "$WORK/site/bayesncl_pyro/"; done
  ln -sfn "$ROOT/models" "$WORK/site/bayesncl_pyro/models"
  ln -sfn "$ROOT/guides" "$WORK/site/bayesncl_pyro/guides"
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PYTHON" -c "import pyro, bayesncl_pyro.models" 2>"$WORK/import.log"; then
  echo "error: $PYTHON cannot import the project ($(tail -n 1 "$WORK/import.log")); install it, or put" \
       "wheels of what is missing (e.g. pyro-ppl, pyro-api) into $ROOT/.whl" >&2
  exit 2
fi

# ----------------------------------------------------------------------------- sizes
if [[ $DRY_RUN -eq 1 ]]; then
  DEVICE=cpu
  TESTS=(-m cuda -q -p no:cacheprovider tests)
  BENCH_STEP=(--device cpu --batch 8 --blocks 2 --steps 1 --warmup 1 --threads 1
              model.convnet_width=8 model.proj_hidden=32 model.proj_dim=16 gate.hidden=16)
  THROUGHPUT=(--device cpu --batch 8 --warmup 1 --steps 2 --threads 1 --compile-backend eager
              model.backbone=convnet model.convnet_width=8 model.proj_hidden=32 model.proj_dim=16 gate.hidden=16)
  TRAIN=(train.device=cpu train.precision=32 model.backbone=convnet model.convnet_width=8 model.proj_hidden=32
         model.proj_dim=16 gate.hidden=16 data.batch_size=16 data.eval_batch_size=64 train.steps=4)
  # generous limits: the dry run checks the script's steps, not timing, on a CPU that may be busy
  CAPS=(180 180 120 120 150 180 180)
  BUDGET_S=900 RESERVE_S=120
  SUBSET=(8 4)  # images per class linked from the data root: train, test
else
  DEVICE=cuda
  TESTS=(-m cuda -q -p no:cacheprovider tests)
  BENCH_STEP=(--device cuda --batch 256 --blocks 10 --steps 2 model.backbone=resnet18)
  THROUGHPUT=(--device cuda --batch 256 --warmup 5 --steps 20 model.backbone=resnet18)
  TRAIN=(train.device=cuda train.precision=bf16 model.backbone=resnet18)
  CAPS=(90 90 60 60 150 180 120)
  # the run: unpacking (~5 s) + the first decode (60,000 JPEGs: ~20 s measured on 2 CPU cores,
  # less with the GPU machine's cores) + start-up + 196 steps; its evaluation: features of
  # 60,000 images and the L-BFGS probe
  RESERVE_S=150
  SUBSET=()
fi

# ----------------------------------------------------------------------------- steps
STARTED=$SECONDS
NAMES=() RESULTS=() TIMES=() STATUSES=()
FAILED=0

HOLD_BACK=$RESERVE_S  # seconds of the budget that the steps before the run leave to it

# run_step NAME CAP LOG COMMAND...: run with a time limit of min(CAP, what is left of the budget
# less HOLD_BACK)
run_step() {
  local name="$1" cap="$2" log="$3"; shift 3
  local left=$((BUDGET_S - (SECONDS - STARTED) - HOLD_BACK))
  local limit=$((cap < left ? cap : left))
  local begin=$SECONDS status=ok code=0
  if ((limit < 5)); then
    status="skipped: the budget of $BUDGET_S s is spent"; FAILED=1
  else
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1 || code=$?
    if ((code == 124 || code == 137)); then status="timed out after ${limit} s"; FAILED=1
    elif ((code != 0)); then status="failed (exit $code, see $log)"; FAILED=1; fi
  fi
  NAMES+=("$name"); TIMES+=("$((SECONDS - begin))"); STATUSES+=("$status")
  echo "[gpu_check] $name: $status ($((SECONDS - begin)) s)" >&2
  [[ $status == ok ]]
}

# result TEXT: the result cell of the step just run
result() { RESULTS+=("$1"); }

# summary KIND FILE: the result cell read from what a step left (a JSON line or file)
summary() {
  "$PYTHON" - "$@" <<'PY'
import json
import sys

kind, path = sys.argv[1], sys.argv[2]
try:
    if kind == "throughput":
        r = json.loads(open(path).read().strip().splitlines()[-1])
        print(f"{r['images_per_second']:.0f} images/s ({r['backbone']}, batch {r['batch']}, {r['device']})")
    elif kind == "train":
        s = json.load(open(path))
        print(f"final loss {s['final_loss']:.3f}, {s['steps']} steps, train {s['train_seconds']:.0f} s, "
              f"gates open {100 * s['open_rate']:.1f} %")
    elif kind == "feed":
        r = json.loads(open(path).read().strip().splitlines()[-1])
        print(f"store {r['store_images_per_second']:.0f} images/s, memory {r['memory_images_per_second']:.0f} "
              f"images/s, ratio {r['ratio']:.2f} ({r['images']} images {r['size']}x{r['size']}, {r['device']})")
    elif kind == "eval":
        r = json.load(open(path))
        p = r["linear_probe"]
        state = "converged" if p["converged"] else "NOT converged"
        print(f"linear top-1 {p['top1']:.2f} % (probe {state}, {p['iterations']} it), "
              f"SC {r['metrics']['gated']['semantic_consistency']:.2f}")
except Exception as error:  # the table still gets a row
    print(f"unreadable output ({type(error).__name__}: {error})")
PY
}

# 1. CUDA-only tests
if run_step "CUDA tests (pytest -m cuda)" "${CAPS[0]}" "$WORK/tests.log" "$PYTHON" -m pytest "${TESTS[@]}"; then
  result "$(grep -E '(passed|skipped|deselected|failed)' "$WORK/tests.log" | tail -n 1 | tr -d '=' | xargs)"
else result "–"; fi

# 2. Pyro step vs plain PyTorch step
if run_step "bench_step.py: Pyro / plain step time" "${CAPS[1]}" "$WORK/bench_step.log" \
    "$PYTHON" scripts/bench_step.py "${BENCH_STEP[@]}"; then
  result "$(grep -oE 'median ratio pyro/plain: [0-9.]+' "$WORK/bench_step.log" | awk '{print "ratio " $4}')"
else result "–"; fi

# 3-5. throughput
throughput() {  # NAME CAP LOG extra arguments...
  local name="$1" cap="$2" log="$3"; shift 3
  if run_step "$name" "$cap" "$log" "$PYTHON" scripts/bench_throughput.py "${THROUGHPUT[@]}" "$@"; then
    result "$(summary throughput "$log")"
  else result "–"; fi
}
throughput "throughput fp32" "${CAPS[2]}" "$WORK/throughput_fp32.log" --precision 32 || true
throughput "throughput bf16" "${CAPS[3]}" "$WORK/throughput_bf16.log" --precision bf16 || true
throughput "throughput bf16 + compile" "${CAPS[4]}" "$WORK/throughput_compile.log" --precision bf16 --compile || true

# 6. one epoch on the CIFAR-10 JPEG copy
prepare_data() {
  [[ -d "$DATA_ROOT/train" && -d "$DATA_ROOT/test" ]] && return 0
  [[ -f "$ARCHIVE" ]] || { echo "no data: $DATA_ROOT is missing and the archive $ARCHIVE does not exist"; return 1; }
  local partial="$DATA_ROOT.partial.$$"
  mkdir -p "$partial" && tar -xzf "$ARCHIVE" -C "$partial" && mv "$partial" "$DATA_ROOT"
}
# cut_data: the dry run's data root, SUBSET[0] / SUBSET[1] images of each train / test class folder
# of DATA_ROOT (the first by name), linked into TRAIN_ROOT
cut_data() {
  [[ -z "$SUBSET_TRAIN" ]] && return 0
  local split count class name
  for split in train test; do
    count=$([[ $split == train ]] && echo "$SUBSET_TRAIN" || echo "$SUBSET_TEST")
    for class in "$DATA_ROOT/$split"/*/; do
      name="$(basename "$class")"
      mkdir -p "$TRAIN_ROOT/$split/$name"
      find "$class" -maxdepth 1 -type f ! -name '.*' | LC_ALL=C sort | head -n "$count" |
        while IFS= read -r file; do ln -sfn "$file" "$TRAIN_ROOT/$split/$name/"; done
    done
  done
}
RUN="$WORK/cifar10_one_epoch"
TRAIN_ROOT="$DATA_ROOT" SUBSET_TRAIN="" SUBSET_TEST=""
if ((${#SUBSET[@]})); then TRAIN_ROOT="$WORK/dry_run_data" SUBSET_TRAIN="${SUBSET[0]}" SUBSET_TEST="${SUBSET[1]}"; fi
export DATA_ROOT ARCHIVE TRAIN_ROOT SUBSET_TRAIN SUBSET_TEST
HOLD_BACK=0
# the unpacking counts in this step's time: prepare the data, then exec the training command
if run_step "one-epoch BayesNCL run (CIFAR-10 JPEG copy)" "${CAPS[5]}" "$WORK/train.log" \
    bash -c "$(declare -f prepare_data cut_data); prepare_data && cut_data && exec \"\$@\"" prepare \
    "$PYTHON" -m bayesncl_pyro.train --config configs/cifar10_resnet18.yaml --no-progress \
    data.name=imagefolder "data.root=$TRAIN_ROOT" train.epochs=1 optim.warmup_epochs=0 "train.out_dir=$RUN" "${TRAIN[@]}"; then
  result "$(summary train "$RUN/summary.json")"
else result "–"; fi

# 7. evaluation of that run
if [[ -f "$RUN/summary.json" ]] && run_step "bayesncl-eval of that run" "${CAPS[6]}" "$WORK/eval.log" \
    "$PYTHON" -m bayesncl_pyro.cli.evaluate "$RUN" --device "$DEVICE" --no-progress; then
  result "$(summary eval "$RUN/eval.json")"
elif [[ ! -f "$RUN/summary.json" ]]; then
  NAMES+=("bayesncl-eval of that run"); TIMES+=(0); STATUSES+=("skipped: no trained run"); RESULTS+=("–"); FAILED=1
else result "–"; fi

# 8. the data feed (gather + pin + copy to the device) from the on-disk image store vs an in-memory tensor
if [[ $DRY_RUN -eq 1 ]]; then FEED=(--device cpu --feed-images 64 --feed-size 32 --batch 16); FEED_CAP=90
else FEED=(--device cuda --feed-images 4096 --feed-size 224 --batch 256); FEED_CAP=90; fi
if run_step "data feed: store vs in-memory tensor" "$FEED_CAP" "$WORK/feed.log" \
    "$PYTHON" scripts/bench_store.py --parts feed --work "$WORK/feed" "${FEED[@]}"; then
  result "$(summary feed "$WORK/feed.log")"
else result "–"; fi

# ----------------------------------------------------------------------------- the table
GPU="$("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")')"
TORCH="$("$PYTHON" -c 'import torch; print(torch.__version__)')"
{
  echo "## GPU check ($([[ $DRY_RUN -eq 1 ]] && echo "CPU dry run, tiny sizes" || echo "$DEVICE"))"
  echo
  echo "device: $GPU; torch $TORCH; $(date -u +%Y-%m-%dT%H:%MZ); total $((SECONDS - STARTED)) s"
  echo
  echo "| check | result | seconds | status |"
  echo "|---|---|---|---|"
  for i in "${!NAMES[@]}"; do
    echo "| ${NAMES[$i]} | ${RESULTS[$i]} | ${TIMES[$i]} | ${STATUSES[$i]} |"
  done
} >"$WORK/gpu_check.md"
cat "$WORK/gpu_check.md"
if [[ -n "$TABLE_FILE" ]]; then
  mkdir -p "$(dirname "$TABLE_FILE")"
  cp "$WORK/gpu_check.md" "$TABLE_FILE.partial" && mv "$TABLE_FILE.partial" "$TABLE_FILE"
fi
exit "$FAILED"
