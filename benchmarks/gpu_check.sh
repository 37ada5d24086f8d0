#!/usr/bin/env bash
# The GPU measurements of docs/performance.md in one run of at most 6 minutes: the GPU tests, adaptation at
# 1024 with its per-phase seconds and the layer-selection levers, the determinism probe, and the generator
# at 1024 (layouts x fp32/TF32 against the naive port, then with cudnn.benchmark).
#
#   OUT=/tmp/gpuout bash benchmarks/gpu_check.sh            # on a CUDA machine, from the repository root
#   OUT=/tmp/gpuout bash benchmarks/gpu_check.sh --dry-run  # the same steps, tiny and on the CPU
#
# Needs .whl/ (carried): wheels of open_clip_torch, ftfy, wcwidth, pooch, platformdirs, and golden/
# with rosinality_A.pt and tiny_clip_openai.pt for the GPU tests. Every part has its own time limit,
# cut to what is left of the script's budget, so one hang costs only its own share; parts run in order
# of importance. Writes at most 8 files to $OUT.
set -o pipefail
export PYTHONUNBUFFERED=1
: "${OUT:?set OUT to the folder for tables and logs}"
mkdir -p "$OUT"

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:src || { echo "installing .whl/*.whl failed"; exit 1; }
if [ -d .whl/golden ]; then export NADA_GOLDEN="$PWD/.whl/golden"; fi

DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; fi
if [ $DRY = 1 ]; then
    DEVICE=cpu; BIG=32; ITERS=1; BUDGET=1500; T_TEST=300; T_ROW=400; T_PROBE=500; T_GEN=300; CASES=fwd1; REPS=2
    # Plain prompts and few layers keep the CPU's share of text encoding and selection small.
    PROBE=(--size 32 --iterations 1 --precisions fp32 --templates plain --layers all)
    ROWS=("ViT-B/32|all|fp32|templates=plain" "ViT-B/32|auto:3|fp32|templates=plain select_chunk=4 select_every=2")
else
    DEVICE=cuda; BIG=1024; ITERS=20; BUDGET=355; T_TEST=90; T_ROW=45; T_PROBE=70; T_GEN=45; CASES=fwd1,fwd4,bwd2; REPS=5
    PROBE=(--size 1024 --iterations 3 --precisions fp32,bf16)
    # clip | layers | precision | AdaptConfig changes: the TF32 baseline first, then the levers; the last row repeats
    # the one closest to issue 19's 45 s.
    ROWS=("ViT-B/32|auto:3|tf32|" "ViT-B/32|auto:3|tf32|select_every=4" "ViT-B/32|auto:3|tf32|select_every=4 bf16=1"
          "ViT-B/32|auto:3|tf32|bf16=1" "ViT-B/32|all|tf32|" "ViT-B/32|all|tf32|bf16=1"
          "ViT-B/32+ViT-B/16|auto:3|tf32|select_every=4 bf16=1" "ViT-B/32|auto:3|tf32|select_every=4 bf16=1")
fi

status=0
part() {  # part NAME SECONDS COMMAND...: run with a limit (cut to the budget left), tee into $OUT/NAME.log, go on
    local name=$1 limit=$2; shift 2
    local left=$((BUDGET - SECONDS))
    if [ $left -lt 15 ]; then
        echo "== $name: skipped, ${left} s of the ${BUDGET} s budget left" | tee -a "$OUT/$name.log"; status=1; return
    fi
    [ "$limit" -gt $left ] && limit=$left
    echo "== $name (limit ${limit} s): $*" | tee -a "$OUT/$name.log"
    local t0=$SECONDS
    timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$OUT/$name.log"
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/$name.log"
    [ $rc = 0 ] || status=1
}

{
    date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
    python3 -c "import torch, open_clip; print('torch', torch.__version__, 'cuda', torch.version.cuda,
        'open_clip', open_clip.__version__)"
} 2>&1 | tee "$OUT/env.txt"

if [ $DRY = 1 ]; then
    part gpu_tests "$T_TEST" python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_networks.py tests/test_adapt.py
else
    part gpu_tests "$T_TEST" python3 -m pytest -q -p no:cacheprovider -m gpu tests/
fi

for row in "${ROWS[@]}"; do
    IFS='|' read -r clip layers prec changes <<< "$row"
    sets=()
    for c in $changes; do sets+=(--set "$c"); done
    part bench_adapt "$T_ROW" python3 benchmarks/bench_adapt.py --device "$DEVICE" --sizes "$BIG" --clips "$clip" \
        --layers "$layers" --precisions "$prec" --iterations "$ITERS" "${sets[@]}" --json "$OUT/bench_adapt.jsonl"
done

part probe_determinism "$T_PROBE" python3 benchmarks/probe_determinism.py --device "$DEVICE" "${PROBE[@]}" \
    --json "$OUT/probe_determinism.jsonl"

GEN=(python3 benchmarks/bench_generator.py --device "$DEVICE" --sizes "$BIG" --cases "$CASES" --repeats "$REPS"
     --naive-backward-max-size 1024)
if [ $DRY = 1 ]; then GEN+=(--layouts cpu); else GEN+=(--layouts grouped,activations); fi
part bench_generator "$T_GEN" "${GEN[@]}" --precisions fp32,tf32
part bench_generator "$T_GEN" "${GEN[@]}" --precisions fp32 --cudnn-benchmark

echo "gpu_check: done in $SECONDS s, status $status" | tee -a "$OUT/env.txt"
exit $status
