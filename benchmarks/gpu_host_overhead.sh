#!/usr/bin/env bash
# Issue 11, AnimateDiff tracing overhead on the host: one device-tool call (writes under $OUT). Run from the repository
# root with .whl carried. TAG names the outputs (before / after). PARTS (space-separated, default all):
#   trace    bench_trace.py AnimateDiff, 10 reps after 6 warm-ups
#   host     profile_trace.py: host µs per attention call in each part of the per-call path + torch.profiler step
#   rowtests tests/test_row_energy.py      kerneltests tests/test_kernels_gpu.py   (TEST_K: a -k filter)
#   traced   bench_traced.py (ia.traced vs ia.trace on the real AnimateDiffPipeline; needs nnsight)
set -u
TAG=${TAG:-before}
PARTS=${PARTS:-"trace host rowtests kerneltests traced"}
has() { case " $PARTS " in *" $1 "*) return 0;; esac; return 1; }
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*" >> $OUT/driver_$TAG.log; }
pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl > $OUT/install_$TAG.txt 2>&1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1
if has traced; then
  python benchmarks/install_missing_wheels.py .whl/nnsight --target /tmp/site --check nnsight.modeling.diffusion \
    >> $OUT/install_$TAG.txt 2>&1
fi
python -c "import torch, triton, diffusers, numpy; print(torch.__version__, triton.__version__, diffusers.__version__,
numpy.__version__)" >> $OUT/install_$TAG.txt 2>&1
nvidia-smi --query-gpu=name,driver_version --format=csv >> $OUT/install_$TAG.txt 2>&1
stamp installed
if has trace; then
  timeout ${T_TRACE:-75} python benchmarks/bench_trace.py --models animatediff --reps 10 --warmup 6 \
    --out $OUT/trace_$TAG.json > $OUT/trace_$TAG.log 2>&1; stamp "trace rc=$?"
fi
if has rowtests || has kerneltests; then
  files=""; has rowtests && files="$files tests/test_row_energy.py"; has kerneltests && files="$files tests/test_kernels_gpu.py"
  timeout ${T_TESTS:-40} python -m pytest -v --tb=short -p no:cacheprovider ${TEST_K:+-k "$TEST_K"} $files > $OUT/tests_$TAG.txt 2>&1; stamp "tests rc=$?"
fi
if has host; then
  timeout ${T_HOST:-60} python benchmarks/profile_trace.py --reps 5 --skip attribution kernels \
    --out $OUT/profile_$TAG.json > $OUT/profile_$TAG.log 2>&1; stamp "host rc=$?"
fi
if has traced; then
  timeout ${T_TRACED:-80} python benchmarks/bench_traced.py --steps 6 --reps ${TRACED_REPS:-1} \
    --modes ${TRACED_MODES:-plain trace traced} --out $OUT/traced_$TAG.json > $OUT/traced_$TAG.log 2>&1
  stamp "traced rc=$?"
fi
stamp done
