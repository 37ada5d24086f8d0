#!/usr/bin/env bash
# The GPU measurements of docs/performance.md in one run of at most 7 minutes: the GPU tests, the
# generator benchmark (layouts x precisions vs the naive port) and the adaptation benchmark at 1024.
#
#   OUT=/tmp/gpuout bash benchmarks/gpu_check.sh            # on a CUDA machine, from the repository root
#   OUT=/tmp/gpuout bash benchmarks/gpu_check.sh --dry-run  # the same steps, tiny and on the CPU
#
# Needs .whl/ (carried): wheels of open_clip_torch, ftfy, wcwidth, pooch, platformdirs, and golden/
# with rosinality_A.pt and tiny_clip_openai.pt for the GPU tests. Every part has its own time limit,
# so one hang costs only its own share. Writes at most 6 files to $OUT.
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
    DEVICE=cpu; SIZES=32; BIG=32; CASES=fwd1; ITERS=1; T_TEST=300; T_GEN=300; T_ROW=400
    ROWS=("ViT-B/32|all|fp32")
else
    DEVICE=cuda; SIZES=256,1024; BIG=1024; CASES=fwd1,fwd4,bwd2; ITERS=20; T_TEST=60; T_GEN=80; T_ROW=52
    # clip | layers | precision; the ensemble row runs with TF32, the setting to reach its target with.
    ROWS=("ViT-B/32|all|fp32" "ViT-B/32|all|tf32" "ViT-B/32|auto:3|fp32" "ViT-B/32|auto:3|tf32"
          "ViT-B/32+ViT-B/16|auto:3|tf32")
fi

status=0
part() {  # part NAME SECONDS COMMAND...: run with a limit, tee into $OUT/NAME.log, note a failure and go on
    local name=$1 limit=$2; shift 2
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
    part gpu_tests "$T_TEST" python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_networks.py
else
    part gpu_tests "$T_TEST" python3 -m pytest -q -p no:cacheprovider -m gpu tests/
fi

part bench_generator "$T_GEN" python3 benchmarks/bench_generator.py --device "$DEVICE" --sizes "$SIZES" \
    --cases "$CASES" --repeats 5 --precisions fp32,tf32 --naive-backward-max-size 1024

for row in "${ROWS[@]}"; do
    IFS='|' read -r clip layers prec <<< "$row"
    part bench_adapt "$T_ROW" python3 benchmarks/bench_adapt.py --device "$DEVICE" --sizes "$BIG" --clips "$clip" \
        --layers "$layers" --precisions "$prec" --iterations "$ITERS" --json "$OUT/bench_adapt.jsonl"
done

echo "gpu_check: done in $SECONDS s, status $status" | tee -a "$OUT/env.txt"
exit $status
