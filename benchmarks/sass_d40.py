"""Static check of the head-dim-40 split kernel's machine code: which ptxas builds bad wgmma descriptors (no GPU needed).

The pointer kernel with head dim 40 split into a 32-wide and a 16-wide slab crashed or returned wrong values on the
H200 for some launch configs (``probe_kernel_split.py``; ``benchmarks/RESULTS.md``, 2026-11-30 and 2026-12-01). This
script compiles that kernel ahead of time for sm_90a with the installed Triton (any machine), then assembles its PTX
with each ``--ptxas`` given and reports, per launch config, two defects in the SASS:

* ``never_written``: uniform registers that an arithmetic instruction reads although no instruction of the kernel
  writes them (the A-descriptor slot of a wgmma whose A operand sits in registers is not counted);
* ``param_desc``: wgmma instructions on the 16-wide slab (``HGMMA.64x16x16``) whose B shared-memory descriptor is
  computed from a kernel parameter (``ULDC … c[0x0][0x2..]``) instead of a shared-memory address.

The PTX Triton emits is correct (every descriptor is a shared address plus a constant); a defect in the SASS is
ptxas's. Usage, with Triton 3.6 (the GPU machine's, bundling ptxas 12.8) in a separate environment::

    git show 7a8e47c:ieadapt_interp/core/kernels/flash_entropy.py > /tmp/k.py
    python benchmarks/sass_d40.py --source /tmp/k.py --ptxas <triton 3.6>/backends/nvidia/bin/ptxas \\
        --ptxas <triton 3.8>/backends/nvidia/bin/ptxas --out sass_d40.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import types
from pathlib import Path

#: (BLOCK_M, BLOCK_N, num_warps, num_stages) -> what the H200 did with it (probe_kernel_split results)
CONFIGS = {(128, 64, 8, 3): "illegal address", (128, 64, 4, 2): "illegal address",
           (64, 64, 4, 2): "illegal address / wrong values", (64, 64, 8, 3): "correct",
           (128, 32, 8, 3): "correct", (64, 32, 4, 2): "correct"}


def load_kernel(source: str):
    """A copy of the kernel module (torch stubbed where it is not installed)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.modules["torch"] = types.SimpleNamespace(float16="f16", bfloat16="bf16", float32="f32", Tensor=object)
    spec = importlib.util.spec_from_file_location("kernel_copy", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def package_configs(module, d: int) -> list[tuple]:
    """The launch configs the package can give the pointer kernel at head dim ``d``: the autotuner's (pruned as it
    prunes them at a long sequence) and the fixed small-problem one."""
    da, db = module._split_head_dim(d)
    tuned = [c for c in module.configs if (db == 0 or c.kwargs["BLOCK_N"] == 32)]
    tuned = module._prune(tuned, {"DA": da, "DB": db, "Nq": 4096}) if db == 0 else tuned
    out = {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) for c in tuned}
    fixed = module._pick_config(4096, 4096, da + db, two_slab=db > 0)
    out.add((fixed["BLOCK_M"], fixed["BLOCK_N"], fixed["num_warps"], fixed["num_stages"]))
    return sorted(out)


def compile_ptx(fn, config: tuple, shape=(32, 8, 4096, 40), slabs: tuple = (32, 16)) -> str:
    """PTX of ``fn`` for sm_90a, head dim ``shape[3]`` as the slabs ``(DA, DB)``, fp16, specialised as a
    ``[B, H, N, D]`` call of ``shape`` (16-divisible integers marked as Triton marks them at a launch; no key mask)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler import compile as triton_compile

    bm, bn, warps, stages = config
    b, h, n, d = shape
    consts = {"HEAD_DIM": d, "DA": slabs[0], "DB": slabs[1], "BLOCK_M": bm, "BLOCK_N": bn, "DOT_PREC": "tf32"}
    if "HAS_BIAS" in fn.arg_names:  # the kernel after key masks (2026-12-01): its bias arguments unused
        consts["HAS_BIAS"] = False
    ints = {"stride_kbb": 0, "stride_kbh": 0, "stride_qb": h * n * d, "stride_qh": n * d, "stride_qm": d, "stride_kb": h * n * d, "stride_kh": n * d,
            "stride_kn": d, "stride_vb": h * n * d, "stride_vh": n * d, "stride_vn": d, "stride_ob": n * h * d,
            "stride_oh": d, "stride_om": h * d, "H": h, "Nq": n, "Nk": n, "NQ_BUCKET": 1 << (n - 1).bit_length(),
            "NK_BUCKET": 1 << (n - 1).bit_length()}
    pointers = {"Q": "*fp16", "K": "*fp16", "V": "*fp16", "O": "*fp16", "ENT": "*fp32", "KBIAS": "*fp32"}
    signature, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            signature[name] = "constexpr"
        elif name in pointers:
            signature[name], attrs[(i,)] = pointers[name], [["tt.divisibility", 16]]
        elif name == "qk_scale":
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
            if ints[name] % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn=fn, signature=signature, constexprs=consts, attrs=attrs)
    return triton_compile(src, target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": warps, "num_stages": stages}).asm["ptx"]


def sass(ptx: str, ptxas: str) -> list[tuple[int, str]]:
    """``(address, instruction)`` of the PTX assembled by ``ptxas`` for sm_90a (nvdisasm from the same folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, cubin = Path(tmp) / "k.ptx", Path(tmp) / "k.cubin"
        src.write_text(ptx)
        subprocess.run([ptxas, "-arch=sm_90a", "-o", str(cubin), str(src)], check=True, capture_output=True)
        text = subprocess.run([str(Path(ptxas).parent / "nvdisasm"), "-c", str(cubin)], check=True,
                              capture_output=True, text=True).stdout
    out = []
    for line in text.splitlines():
        m = re.match(r"\s*/\*([0-9a-f]+)\*/\s+(.*?)\s*;", line)
        if m:
            out.append((int(m.group(1), 16), m.group(2)))
    return out


def _operands(text: str) -> tuple[str, list[str]]:
    parts = re.sub(r"^@!?U?P\w+\s+", "", text).split(None, 1)
    return (parts[0], [o.strip() for o in parts[1].split(",")]) if len(parts) == 2 else (parts[0], [])


def never_written(code) -> list[str]:
    """Arithmetic reads of uniform registers no instruction writes (in program order, over the whole kernel)."""
    written, found = set(), []
    for addr, text in code:
        op, ops = _operands(text)
        writes = not op.startswith(("ST", "HGMMA", "BAR", "WARPGROUP", "SYNCS", "RED", "ATOM", "BRA", "EXIT"))
        for operand in (ops[1:] if writes else []):
            for reg in re.findall(r"\bUR(\d+)\b", operand):
                if int(reg) not in written:
                    found.append(f"{addr:#06x} {text}")
        if writes and ops and (m := re.match(r"UR(\d+)", ops[0])):
            written.update({int(m.group(1)), int(m.group(1)) + 1} if ".64" in op else {int(m.group(1))})
    return found


def param_descriptors(code) -> list[str]:
    """16-wide wgmma instructions whose B descriptor (``URn+2:URn+3`` of ``gdesc[URn]``, A in registers) is
    computed, through uniform moves and adds, from a kernel parameter."""
    def writer(i, reg):
        for j in range(i - 1, -1, -1):
            op, ops = _operands(code[j][1])
            if ops and ops[0] == reg and not op.startswith(("HGMMA", "ST", "BAR", "WARPGROUP")):
                return j
        return None

    def from_param(i, reg, depth=0) -> bool:
        j = writer(i, reg)
        if j is None or depth > 12:
            return False
        op, ops = _operands(code[j][1])
        if re.search(r"c\[0x0\]\[0x2[0-9a-f]{2}\]", code[j][1]):
            return True
        return any(from_param(j, r, depth + 1) for s in ops[1:] for r in re.findall(r"\bUR\d+\b", s) if r != "URZ")

    found = []
    for i, (addr, text) in enumerate(code):
        m = re.search(r"HGMMA\.64x16x16\S*\s+R\d+,\s*R\d+,\s*gdesc\[UR(\d+)\]", text)
        if m and any(from_param(i, f"UR{int(m.group(1)) + k}") for k in (2, 3)):
            found.append(f"{addr:#06x} {text}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="a copy of the kernel module (see the usage above)")
    parser.add_argument("--ptxas", action="append", required=True, help="a ptxas binary (repeat to compare)")
    parser.add_argument("--head-dims", default=None,
                        help="comma-separated head dims: check the package's own slabs and launch configs for them "
                             "(--source a copy of the current module) instead of the 32 + 16 split")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import triton

    module = load_kernel(args.source)
    fn = module._fwd_kernel
    if args.head_dims:  # the package's own slabs and configs, per head dim
        cases = [(cfg, f"d={d} {module._split_head_dim(d)}", d, module._split_head_dim(d))
                 for d in map(int, args.head_dims.split(",")) for cfg in package_configs(module, d)]
    else:  # the 32 + 16 split the H200 probes ran
        cases = [(cfg, on_h200, 40, (32, 16)) for cfg, on_h200 in CONFIGS.items()]
    rows = []
    for config, on_h200, d, slabs in cases:
        ptx = compile_ptx(fn, config, (32, 8, 4096, d), slabs)
        for ptxas in args.ptxas:
            version = subprocess.run([ptxas, "--version"], capture_output=True, text=True).stdout.strip().splitlines()
            code = sass(ptx, ptxas)
            row = {"config": config, "on_h200": on_h200, "triton": triton.__version__,
                   "ptxas": version[-1] if version else ptxas, "never_written": never_written(code),
                   "param_desc": param_descriptors(code)}
            rows.append(row)
            print(f"{str(config):18} {on_h200:32} {row['ptxas'][-40:]:40} never written {len(row['never_written'])}"
                  f", param descriptors {len(row['param_desc'])}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("TRITON_CACHE_DIR", tempfile.mkdtemp())
    main()
