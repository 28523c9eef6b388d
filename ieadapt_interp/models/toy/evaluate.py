"""Judge the toy model with the attribute checks.

    python -m ieadapt_interp.models.toy.evaluate [--path DIR] [--seed 0] [--guidance-scale G] [--out results.csv]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import pandas as pd
import torch

from ...models.toy.attributes import check_clip
from ...models.toy.dataset import heldout_captions
from ...models.toy.model import DEFAULT_SAMPLING, load_toy_pipeline


@torch.no_grad()
def generate(pipe, captions: list[str], seed: int = 0, batch_size: int = 8, progress: bool = False,
             **sampling) -> np.ndarray:
    """(B, F, H, W, 3) float clips in [0, 1]; every caption gets its own CPU generator seeded with ``seed``,
    so a caption's clip does not depend on batching or on the device."""
    settings = {**DEFAULT_SAMPLING, **sampling}
    out = []
    for i in range(0, len(captions), batch_size):
        caps = list(captions[i:i + batch_size])
        gens = [torch.Generator("cpu").manual_seed(seed) for _ in caps]
        out.append(np.asarray(pipe(caps, generator=gens, output_type="np", **settings).frames))
        if progress:
            print(f"generated {min(i + batch_size, len(captions))}/{len(captions)}", file=sys.stderr, flush=True)
    return np.concatenate(out, 0)


def evaluate_toy_model(pipe, captions: list[str] | None = None, seed: int = 0, batch_size: int = 8,
                       progress: bool = False, **sampling) -> pd.DataFrame:
    """One row per caption: the attribute checks of the clip generated at ``seed`` with DEFAULT_SAMPLING
    (overridable through ``sampling``)."""
    captions = list(captions) if captions is not None else heldout_captions()
    clips = generate(pipe, captions, seed=seed, batch_size=batch_size, progress=progress, **sampling)
    return pd.DataFrame([check_clip(c, cap) for c, cap in zip(clips, captions)])


def summarize(df: pd.DataFrame) -> dict:
    """Percentages: colour, shape, direction (motion, 'still' included), background, one-blob frames."""
    return {
        "n": len(df),
        "colour_pct": round(100 * df.colour_ok.mean(), 1),
        "direction_pct": round(100 * df.motion_ok.mean(), 1),
        "shape_pct": round(100 * df.shape_ok.mean(), 1),
        "background_pct": round(100 * df.background_ok.mean(), 1),
        "one_blob_frames_pct": round(100 * df.one_blob_frac.mean(), 1),
    }


QUALITY_BAR = {"colour_pct": 90.0, "direction_pct": 85.0, "shape_pct": 70.0, "one_blob_frames_pct": 90.0}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--path", default=None, help="pipeline folder (default: the shipped data/toy_t2v)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--guidance-scale", type=float, default=None)
    ap.add_argument("--steps", type=int, default=None, help="num_inference_steps")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--limit", type=int, default=None, help="only the first N held-out captions")
    ap.add_argument("--out", default=None, help="CSV of per-caption results")
    args = ap.parse_args(argv)
    pipe = load_toy_pipeline(args.path, device=args.device)
    kw = {}
    if args.guidance_scale is not None:
        kw["guidance_scale"] = args.guidance_scale
    if args.steps is not None:
        kw["num_inference_steps"] = args.steps
    caps = heldout_captions()[: args.limit]
    t = time.time()
    df = evaluate_toy_model(pipe, caps, seed=args.seed, batch_size=args.batch_size, progress=True, **kw)
    s = summarize(df)
    s["seconds"] = round(time.time() - t, 1)
    s["meets_bar"] = all(s[k] >= v for k, v in QUALITY_BAR.items())
    if args.out:
        df.to_csv(args.out, index=False)
    print(df.groupby("want_motion")[["motion_ok", "colour_ok", "shape_ok"]].mean().round(2).to_string())
    print(json.dumps(s))


if __name__ == "__main__":
    main()
