#!/usr/bin/env bash
# The CUDA checks of domain vectors: the GPU tests of tests/test_domains.py and the throughput of
# benchmarks/bench_domains.py (toy and FFHQ-1024-shaped generators). Results go to $OUT (default ./out).
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONPATH=src
nvidia-smi -L
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python -m pytest -q -p no:cacheprovider tests/test_domains.py -m gpu 2>&1 | tail -3
python benchmarks/bench_domains.py --generator toy --device cuda --per-domain 16 --batch 64 --repeats 5 \
    | tee "$OUT/bench_domains_toy_cuda.jsonl"
python benchmarks/bench_domains.py --generator shape:1024 --device cuda --per-domain 4 --batch 16 --repeats 3 \
    | tee "$OUT/bench_domains_1024_cuda.jsonl"
