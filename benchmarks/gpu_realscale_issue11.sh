#!/bin/bash
# issue 11, the three unmeasured real-scale rows, in ONE call of the device tool (timeout_s 500):
#   1. HunyuanVideo masked per-call kernel time (bench_kernel.py, no two-pass/pointer variants)
#   2. Wan 2.1-14B 720p 81f traced/plain (bench_trace.py, 2 timed steps after 1 warm-up)
#   3. HunyuanVideo 720p 129f traced/plain (1 timed step after 1 warm-up), or hunyuan65 when the time left does not
#      cover the estimate made from step 1's per-call times.
# Every step has its own timeout inside DEADLINE seconds from the start; everything is logged to $OUT/log.txt as it
# comes (a timeout keeps the log; bench_trace prints every forward as it ends).
# TRITON_CACHE_AUTOTUNING=1 was meant to let step 3 reuse step 1's autotuning of the masked 119 k-token shape (same
# key); with triton 3.6 it did not (step 3 autotuned again, 24.8 s, inside its untimed warm-up). Ran 2026-12-02 00:46
# in 342 s (benchmarks/RESULTS.md, "Real-scale rows of issue 11").
#   carry: [".whl"]      CPU check: TINY=1 PY=.venv/bin/python OUT=/tmp/x bash benchmarks/gpu_realscale_issue11.sh
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRITON_CACHE_AUTOTUNING=1 TRITON_PRINT_AUTOTUNING=1
PY=${PY:-python3}
DEADLINE=${DEADLINE:-470}
T0=$(date +%s)
el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( DEADLINE - ($(date +%s) - T0) )); }
cap() { local l; l=$(( $(left) - 5 )); (( l < $1 )) && echo $l || echo $1; }   # min(cap, time left - 5)
if [ -z "$TINY" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD:$PWD/benchmarks
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
  TINYFLAG=""
else
  export PYTHONPATH=$PWD:$PWD/benchmarks
  TINYFLAG="--tiny"
fi
$PY -c "import torch, triton, diffusers; print('torch', torch.__version__, 'triton', triton.__version__, 'diffusers', diffusers.__version__)" | tee -a "$OUT/gpu.txt"
git log -1 --format='commit %h %s' 2>/dev/null | cut -c1-120 | tee -a "$OUT/gpu.txt"

el "== 1. kernel hunyuan_720p_129f_masked (cap $(cap 100) s)"
timeout -k 5 "$(cap 100)" $PY benchmarks/bench_kernel.py --reps 5 --no-backends --skip pointer,two_pass \
  --only hunyuan_720p_129f_masked --out "$OUT/kernel_hunyuan_masked.json" 2>&1 | grep -v -i warn
el "   rc ${PIPESTATUS[0]}"

el "== 2. trace wan14b (cap $(cap 200) s)"
timeout -k 5 "$(cap 200)" $PY benchmarks/bench_trace.py $TINYFLAG --models wan14b --reps-big 2 \
  --out "$OUT/trace_wan14b.json" 2>&1 | grep -v -i -e warn -e "kept in float32"
el "   rc ${PIPESTATUS[0]}"

# 129 frames if the time left covers an estimate from step 1: build + import 30 s, 2 plain forwards of 60 masked
# SDPA calls + ~6 s of the rest, 2 traced forwards of 60 fused calls + ~7 s, 20 s margin (autotuning: cached)
HY=${HY:-$($PY - "$OUT/kernel_hunyuan_masked.json" "$(left)" <<'EOF'
import json, sys
try:
    r = json.load(open(sys.argv[1]))["results"][0]
    s, f = r["sdpa_ms"] / 1e3, r["fused_ms"] / 1e3
    est = 30 + 2 * (60 * s + 6) + 2 * (60 * f + 7) + 20
except Exception:  # no kernel numbers: the 2026-12-01 per-call guesses (masked SDPA ~0.9 s, fused ~0.35 s) + autotune
    est = 30 + 2 * (60 * 0.9 + 6) + 2 * (60 * 0.35 + 7) + 40
left = float(sys.argv[2])
print("hunyuan" if left >= 1.1 * est else "hunyuan65")
print(f"estimate for 129 frames {est:.0f} s, {left:.0f} s left", file=sys.stderr)
EOF
)}
el "== 3. trace $HY (cap $(cap 400) s)"
timeout -k 5 "$(cap 400)" $PY benchmarks/bench_trace.py $TINYFLAG --models "$HY" --reps-big 1 \
  --out "$OUT/trace_hunyuan.json" 2>&1 | grep -v -i -e warn -e "kept in float32"
el "   rc ${PIPESTATUS[0]}"
nvidia-smi --query-gpu=memory.used --format=csv 2>/dev/null
el "done"
