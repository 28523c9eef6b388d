"""The ``ieadapt`` command: run attention-perturbation sweeps from a YAML file and report on them.

    ieadapt sweep CONFIG.yaml          # run (or resume) a sweep; see docs/sweep_example.yaml
    ieadapt report STORE [--out DIR]   # CSV tables + figures of a (finished or partial) sweep

>>> main(["sweep", "docs/sweep_example.yaml", "--dry-run"])   # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .core.errors import IEAdaptError, IEAdaptFileNotFoundError, IEAdaptTypeError, IEAdaptValueError
from .sweeps.tables import effect_table, summary_table  # summary.csv / effect.csv of `ieadapt report`

EXAMPLE_YAML = """\
# ieadapt sweep example — every spatial and temporal layer of the embedded toy model × {I, U}
model: null                    # null = embedded toy model; "tiny:animatediff"; or a local model folder
# motion_adapter: /models/animatediff-motion-adapter-v1-5-3    # AnimateDiff checkpoints only
prompts:                       # the embedded model's caption grammar
  - a red circle moving left on a white background
  - a blue square staying still on a black background
seeds: [42]
generation: toy                # toy | paper_animatediff | paper_cogvideox | a mapping:
# generation: {preset: toy, num_inference_steps: 10}
perturbations:
  - preset: single_layer       # every layer of these kinds alone, with each replacement
    kinds: [spatial, temporal]
    replacements: [identity, uniform]
  - preset: all_layers         # every layer of a kind at once (temporal.all:identity, ...)
    kinds: [temporal]
  - preset: lambda_sweep       # A <- λI + (1-λ)U on all temporal layers
    layers: temporal
    lams: [0.0, 0.5, 1.0]
  - name: last-spatial-U       # one hand-written perturbation
    layers: {kinds: [spatial], indices: [-1]}   # -1: the last layer of that kind
    replacement: uniform
metrics: [ssim, temporal_ssim, flow_magnitude, motion_smoothness_flow, direction_match]
store: runs/toy_single_layer.zarr
engine: local                  # local | ray
batch_size: 4                  # perturbation variants per forward pass
save_videos: false             # true: one mp4 (or GIF) per job under STORE-files/videos/
# ray: {address: auto, actors: 8}
"""

SWEEP_HELP = f"""\
Run the unperturbed baseline and every (prompt, seed, perturbation) of CONFIG.yaml, computing the
listed metrics, and write each finished job to a zarr store. Re-running the same command resumes:
finished jobs are kept, the others computed. A store written by a different configuration is refused.

Perturbation presets: single_layer, all_layers, entropy_split (needs a calibration run:
`calibration_prompt`), up_down, per_block, multi_layer, lambda_sweep (see ieadapt_interp.sweeps.presets). Metrics: see
`python -c "import ieadapt_interp.metrics as m; print(sorted(m.METRICS))"`; learned metrics without local
weights are stored as NaN with a reason.

Example CONFIG.yaml:

{EXAMPLE_YAML}"""

REPORT_HELP = """\
Read a sweep store and write, to --out (default: STORE-report/):
  summary.csv     one row per finished (prompt, seed, perturbation, metric), with missing reasons
  effect.csv      per perturbation and metric: mean value, baseline mean, change
  *.png           per-layer figures (ieadapt_interp.analysis.figures when available, else bar charts of the change)
Works on a partial sweep too (only finished jobs are used).
"""

CONFIG_KEYS = {
    "model",
    "motion_adapter",
    "prompts",
    "seeds",
    "generation",
    "perturbations",
    "metrics",
    "store",
    "engine",
    "batch_size",
    "save_videos",
    "ray",
    "progress",
}


# -- config --------------------------------------------------------------------------------------------------
def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a sweep YAML file → a plain dict (keys: see ``EXAMPLE_YAML``)."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise IEAdaptFileNotFoundError(
            f"config file {str(path)!r} not found; `ieadapt sweep --help` shows an example."
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise IEAdaptValueError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from error
    if not isinstance(data, Mapping):
        raise IEAdaptTypeError(
            f"{path}: the top level must be a mapping (model:, prompts:, …); see `ieadapt sweep --help`."
        )
    unknown = sorted(set(data) - CONFIG_KEYS)
    if unknown:
        raise IEAdaptValueError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(CONFIG_KEYS)}.")
    for key in ("prompts", "perturbations", "store"):
        if key not in data:
            raise IEAdaptValueError(
                f"{path}: missing required key {key!r}; see `ieadapt sweep --help` for an example."
            )
    return dict(data)


def model_spec(config: Mapping[str, Any]):
    """The picklable model spec of a config (``model`` + optional ``motion_adapter``)."""
    model = config.get("model")
    if config.get("motion_adapter"):
        return {"model": model, "motion_adapter": config["motion_adapter"]}
    return model


def generation_settings(value: Any) -> dict[str, Any]:
    """``generation:`` as a preset name, a mapping, or a mapping with ``preset:`` plus overrides."""
    from .sweeps import presets

    if value is None:
        return {}
    if isinstance(value, str):
        return presets.generation(value)
    if not isinstance(value, Mapping):
        raise IEAdaptTypeError(f"generation must be a preset name or a mapping; got {value!r}.")
    value = dict(value)
    name = value.pop("preset", None)
    return presets.generation(name, **value) if name else value


def _layers(value: Any):
    from .methods.perturbation import Layers, as_layers

    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"names", "kinds", "blocks", "indices"})
        if unknown:
            raise IEAdaptValueError(f"layers: unknown key(s) {unknown}; use names, kinds, blocks, indices.")
        return Layers(**dict(value))
    if isinstance(value, (str, list, tuple)):
        return as_layers(value)
    raise IEAdaptValueError(
        f"layers must be a kind, a layer name, a list of names or a mapping "
        f"(names/kinds/blocks/indices); got {value!r}."
    )


def _check_options(fn, entry: Mapping[str, Any], where: str) -> None:
    """Raise one clear error when ``entry`` names an option ``fn`` does not take."""
    import inspect

    known = set(inspect.signature(fn).parameters) - {"pipe", "stats"}
    known |= {"calibration_prompt"} if {"stats"} & set(inspect.signature(fn).parameters) else set()
    unknown = sorted(set(entry) - known)
    if unknown:
        raise IEAdaptValueError(f"{where}: unknown option(s) {unknown}; it takes {sorted(known)}.")


def perturbations(entries: Sequence[Mapping[str, Any]], pipe_fn, config: Mapping[str, Any]) -> dict[str, Any]:
    """Expand the ``perturbations:`` list (presets and explicit entries) to ``{name: Perturbation}``."""
    from .sweeps import presets
    from .methods.perturbation import Perturbation

    if not isinstance(entries, (list, tuple)) or not entries:
        raise IEAdaptValueError(
            "perturbations must be a non-empty list of entries (each a `preset:` or an explicit "
            "`layers:` + `replacement:`); see `ieadapt sweep --help`."
        )
    out: dict[str, Any] = {}
    for i, entry in enumerate(entries):
        entry = dict(entry)
        if "preset" in entry:
            name = entry.pop("preset")
            if name not in presets.PRESETS:
                raise IEAdaptValueError(
                    f"perturbations[{i}]: unknown preset {name!r}; choose one of {sorted(presets.PRESETS)}."
                )
            fn = presets.PRESETS[name]
            _check_options(fn, entry, f"perturbations[{i}] (preset {name})")
            if name == "lambda_sweep":
                made = fn(_layers(entry.pop("layers", "temporal")), **entry)
            elif name in ("entropy_split", "multi_layer"):
                prompt = entry.pop("calibration_prompt", config["prompts"][0])
                gen = generation_settings(config.get("generation"))
                seed = gen.pop("seed", None)
                seeds = config.get("seeds") or [seed if seed is not None else 0]
                stats = presets.calibration_stats(pipe_fn(), prompt, seed=int(seeds[0]), **gen)
                made = fn(pipe_fn(), stats, **entry)
            else:
                made = fn(pipe_fn(), **entry)
        else:
            if "layers" not in entry or "replacement" not in entry:
                raise IEAdaptValueError(
                    f"perturbations[{i}] needs `preset:` or both `layers:` and `replacement:`; got "
                    f"{sorted(entry)}."
                )
            name = entry.pop("name", None)
            steps = tuple(entry["steps"]) if entry.get("steps") else None
            p = Perturbation(
                _layers(entry["layers"]),
                entry["replacement"],
                entry.get("lam", 1.0),
                steps,
                entry.get("branch", "both"),
            )
            made = {name or f"custom{i}:{p.label}": p}
        clash = sorted(set(made) & set(out))
        if clash:
            raise IEAdaptValueError(f"perturbations[{i}] repeats names already defined: {clash[:5]}.")
        out.update(made)
    return out


def run_sweep(
    config: Mapping[str, Any],
    *,
    engine: str | None = None,
    store: str | None = None,
    progress: bool = True,
    dry_run: bool = False,
):
    """Run the sweep a loaded config describes (what ``ieadapt sweep`` does)."""
    from .sweeps import SweepConfig, SweepStore, sweep
    from .sweeps.models import build_pipeline

    spec = model_spec(config)
    gen = generation_settings(config.get("generation"))
    seeds = config.get("seeds")
    engine = engine or config.get("engine", "local")
    store = store or config["store"]
    pipe_cache: list = []

    def pipe_fn():
        if not pipe_cache:
            pipe_cache.append(build_pipeline(spec))
        return pipe_cache[0]

    perts = perturbations(config["perturbations"], pipe_fn, config)
    if dry_run:
        cfg = SweepConfig.build(
            config["prompts"],
            perts,
            seeds=seeds,
            metrics=config.get("metrics", ()),
            generation=gen,
            model=spec,
        )
        SweepStore.check(store, cfg)
        P, S, K, M = cfg.shape
        print(
            f"{P} prompt(s) × {S} seed(s) × {K} perturbations (incl. baseline) = {P * S * K} jobs, {M} metric(s); "
            f"store {store} (config hash {cfg.hash})."
        )
        return None
    kwargs = {
        "seeds": seeds,
        "store": store,
        "engine": engine,
        "batch_size": int(config.get("batch_size", 4)),
        "save_videos": bool(config.get("save_videos", False)),
        "generation": gen,
        "progress": progress,
        "engine_options": config.get("ray") if engine == "ray" else None,
    }
    if "metrics" in config:
        kwargs["metrics"] = config["metrics"]
    return sweep(spec, config["prompts"], perts, **kwargs)


# -- report (its tables: summary_table, effect_table from ieadapt_interp.sweeps.tables) ------------------
def _figures(ds, metric: str) -> dict:
    """The figures a sweep supports: every perturbation; per layer (single-layer I / U); along λ (mixes)."""
    import numpy as np

    from .analysis import figures

    made = {"perturbation_effect": figures.perturbation_effect(ds, metric)}
    single = (ds["index"] >= 0) & ds["replacement"].isin(["identity", "uniform"])
    if bool(single.any()):
        made["layer_effect"] = figures.layer_effect(ds, metric, kinds=None)
    if bool((ds["replacement"].isin(["mix", "scale"]) & np.isfinite(ds["lam"])).any()):
        made["lambda_effect"] = figures.lambda_effect(ds, metric)
    return made


def report(store: str | os.PathLike, out: str | os.PathLike | None = None) -> list[Path]:
    """Write CSV tables and figures of a sweep store to ``out``; returns the written paths."""
    import numpy as np

    from .sweeps import open_sweep

    ds = open_sweep(store)
    out = Path(out) if out else Path(str(Path(store)).rstrip("/") + "-report")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    summary, effect = summary_table(ds), effect_table(ds)
    for name, table in (("summary.csv", summary), ("effect.csv", effect)):
        table.to_csv(out / name, index=False)
        written.append(out / name)
    for metric in [str(m) for m in ds.metric.values]:
        if not np.isfinite(ds["value"].sel(metric=metric).where(ds["done"]).values).any():
            continue  # missing everywhere (no weights): nothing to draw
        for name, fig in _figures(ds, metric).items():
            path = out / f"{name}_{metric}.png"
            fig.savefig(path, dpi=120)
            written.append(path)
    missing = summary.loc[summary["missing_reason"] != "", ["metric", "missing_reason"]].drop_duplicates(
        "metric"
    )
    for row in missing.itertuples():
        print(
            f"metric {row.metric!r} is missing (NaN): {row.missing_reason.splitlines()[0]}", file=sys.stderr
        )
    done = int(ds["done"].sum())
    print(f"{done}/{ds['done'].size} jobs finished; wrote {len(written)} file(s) to {out}")
    return written


# -- entry point ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ieadapt",
        description="Attention analysis of text-to-video diffusion models: perturb attention layers (replace "
        "their maps by identity I or uniform U), measure the effect, and report it.",
        epilog="Start with:  ieadapt sweep --help   (it prints an example config)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{sweep,report}")
    p = sub.add_parser(
        "sweep",
        help="run or resume a perturbation sweep described by a YAML file",
        description=SWEEP_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="the sweep's YAML file (example below; also docs/sweep_example.yaml)")
    p.add_argument("--engine", choices=("local", "ray"), help="override the config's engine")
    p.add_argument("--store", help="override the config's store path")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in batch logs)")
    p.add_argument(
        "--dry-run", action="store_true", help="check the config and print the job count; run nothing"
    )
    r = sub.add_parser(
        "report",
        help="write CSV tables and figures of a sweep store",
        description=REPORT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("store", help="the sweep's zarr store (the `store:` of its config)")
    r.add_argument("--out", help="output folder (default: STORE-report/)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ieadapt`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "sweep":
            config = load_config(args.config)
            ds = run_sweep(
                config,
                engine=args.engine,
                store=args.store,
                progress=not args.no_progress,
                dry_run=args.dry_run,
            )
            if ds is not None:
                print(
                    f"{int(ds['done'].sum())}/{ds['done'].size} jobs done in {args.store or config['store']}; "
                    f"next: ieadapt report {args.store or config['store']}"
                )
        else:
            report(args.store, args.out)
    except IEAdaptError as error:  # a user error: one line; anything else keeps its traceback
        print(f"ieadapt {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
