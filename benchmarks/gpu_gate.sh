#!/usr/bin/env bash
# The end-of-session GPU gate (one device-tool call, .whl carried, writes under $OUT): the kernel and row-energy GPU
# tests on the committed tree, the AnimateDiff edit (inversion + edit, 4 steps) and tracing benchmarks re-run on it,
# then ia.traced vs ia.trace. Each part has its own timeout; the log keeps what finished.
set -u
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a $OUT/gate.log; }
pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl > $OUT/install.txt 2>&1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python -c "import torch, triton, diffusers; print(torch.__version__, triton.__version__, diffusers.__version__)" >> $OUT/install.txt 2>&1
nvidia-smi --query-gpu=name,driver_version --format=csv >> $OUT/install.txt 2>&1
stamp installed
timeout ${T_TESTS:-140} python -m pytest -q -p no:cacheprovider tests/test_kernels_gpu.py tests/test_row_energy.py \
  > $OUT/tests.txt 2>&1; stamp "tests rc=$? $(tail -1 $OUT/tests.txt)"
timeout ${T_EDIT:-70} python benchmarks/bench_edit.py --bench --cases animatediff --steps 4 --reps 2 \
  --which edit edit_with_source --out $OUT/edit.json > $OUT/edit.log 2>&1; stamp "edit rc=$?"
timeout ${T_TRACE:-60} python benchmarks/bench_trace.py --models animatediff --reps 10 --warmup 6 \
  --out $OUT/trace_animatediff.json > $OUT/trace.log 2>&1; stamp "trace rc=$? $(tail -1 $OUT/trace.log | cut -c1-300)"
python benchmarks/install_missing_wheels.py .whl/nnsight --target /tmp/site --check nnsight.modeling.diffusion \
  >> $OUT/install.txt 2>&1
timeout ${T_TRACED:-70} python benchmarks/bench_traced.py --steps 6 --reps 1 --modes plain trace traced \
  --out $OUT/traced.json > $OUT/traced.log 2>&1; stamp "traced rc=$?"
stamp done
