#!/usr/bin/env bash
# Issue 11, tracing overhead: one device-tool call (writes under $OUT). Run from the repository root with .whl carried.
# MODE=full (default): kernel tests, bench_trace (AnimateDiff + Wan 1.3B), bench_traced, profile_trace with the
# baseline recorder in benchmarks/_baseline_handlers.py (`git show 7a8e47c:ieadapt_interp/core/handlers.py`);
# MODE=short: a few kernel tests, bench_traced, bench_trace AnimateDiff.
set -u
MODE=${MODE:-full}
pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1
python benchmarks/install_missing_wheels.py .whl/nnsight --target /tmp/site --check nnsight.modeling.diffusion \
  > $OUT/install.txt 2>&1
python -c "import torch, triton, diffusers, transformers, nnsight, numpy; print(torch.__version__, triton.__version__,
diffusers.__version__, transformers.__version__, nnsight.__version__, numpy.__version__)" >> $OUT/install.txt 2>&1
nvidia-smi --query-gpu=name,driver_version --format=csv >> $OUT/install.txt 2>&1
if [ "$MODE" = short ]; then
  timeout 30 python -m pytest -q -p no:cacheprovider tests/test_row_energy.py -k "energies_on_gpu or (fp64_on_gpu and 40)" \
    > $OUT/tests.txt 2>&1
  timeout 75 python benchmarks/bench_traced.py --steps 6 --reps 1 --out $OUT/traced.json > $OUT/traced.log 2>&1
  timeout 60 python benchmarks/bench_trace.py --models animatediff --reps 10 --warmup 6 --out $OUT/trace.json \
    > $OUT/trace.log 2>&1
  echo done; exit 0
fi
timeout 50 python -m pytest -q -p no:cacheprovider tests/test_row_energy.py > $OUT/tests.txt 2>&1
timeout 170 python benchmarks/bench_trace.py --models animatediff wan13b --reps 10 --warmup 6 \
  --out $OUT/trace.json > $OUT/trace.log 2>&1
timeout 100 python benchmarks/bench_traced.py --steps 6 --reps 2 --out $OUT/traced.json > $OUT/traced.log 2>&1
timeout 80 python benchmarks/profile_trace.py --reps 10 --skip kernels --baseline-handlers \
  benchmarks/_baseline_handlers.py --out $OUT/profile.json > $OUT/profile.log 2>&1
echo done
