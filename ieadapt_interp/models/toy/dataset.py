"""Procedural text-to-video data: one shape on a plain background, 16 frames at 64x64.

Everything is vectorised in torch and deterministic given a seed, on CPU and GPU alike.

Caption grammar::

    a {colour} {shape} moving {direction} on a {background} background
    a {colour} {shape} staying still on a {background} background

Motion design (see DESIGN.md §4): a moving shape always crosses the frame along its direction, through the
centre, by 30-36 px over the 16 frames, with only a small random jitter (±3 px along the motion, ±6 px across
it). The conditional mean of a clip given its caption is therefore itself a sharp, clearly moving shape, so
the denoiser does not have to break a large left/right symmetry independently in every frame (which is what
made a prototype move its shapes by 5-7 px in a random direction).
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from ...core.errors import IEAdaptKeyError, IEAdaptValueError

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 220, 40),
    "purple": (150, 50, 200),
    "orange": (250, 140, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
MOTIONS: tuple[str, ...] = DIRECTIONS + ("still",)
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
}
# unit displacement (dx, dy) in image coordinates (y grows downwards)
MOTION_VECTORS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "still": (0.0, 0.0),
}

NUM_FRAMES = 16
SIZE = 64
#: total displacement of a moving shape over the clip, in pixels (uniform in this range)
DISPLACEMENT = (30.0, 36.0)
#: half-size of the shape in pixels (uniform in this range)
HALF_SIZE = (7.0, 9.0)
ALONG_JITTER = 3.0
ACROSS_JITTER = 6.0
STILL_JITTER = 8.0

VOCAB_WORDS: tuple[str, ...] = tuple(
    dict.fromkeys(
        ["a", "moving", "staying", "still", "on", "background"]
        + list(COLOURS)
        + list(SHAPES)
        + list(DIRECTIONS)
        + list(BACKGROUNDS)
    )
)


@dataclass(frozen=True)
class Combo:
    colour: str
    shape: str
    motion: str  # one of MOTIONS ("still" for "staying still")
    background: str

    @property
    def caption(self) -> str:
        return make_caption(self.colour, self.shape, self.motion, self.background)


def make_caption(colour: str, shape: str, motion: str, background: str) -> str:
    if motion == "still":
        return f"a {colour} {shape} staying still on a {background} background"
    return f"a {colour} {shape} moving {motion} on a {background} background"


def parse_caption(caption: str) -> Combo:
    """Inverse of :func:`make_caption`; raises ValueError for captions outside the grammar."""
    w = caption.strip().lower().split()
    try:
        if len(w) == 9 and w[0] == "a" and w[3] in ("moving", "staying") and w[5:7] == ["on", "a"] and w[8] == "background":
            colour, shape, bg = w[1], w[2], w[7]
            if w[3] == "moving":
                motion = w[4]
                if motion not in DIRECTIONS:
                    raise IEAdaptKeyError(motion)
            elif w[4] == "still":
                motion = "still"
            else:
                raise IEAdaptKeyError(w[4])
            if colour in COLOURS and shape in SHAPES and bg in BACKGROUNDS:
                return Combo(colour, shape, motion, bg)
    except KeyError:
        pass
    raise IEAdaptValueError(f"caption outside the toy grammar: {caption!r}")


def all_combos() -> list[Combo]:
    return [Combo(*c) for c in itertools.product(COLOURS, SHAPES, MOTIONS, BACKGROUNDS)]


HELDOUT_SEED = 1234
HELDOUT_PER_MOTION = 13


def _make_heldout() -> list[Combo]:
    """The fixed held-out combinations: 13 per motion (65), drawn with a fixed seed such that every pair of
    attribute values (colour-motion, shape-background, ...) still occurs in training."""
    rng = random.Random(HELDOUT_SEED)
    combos = all_combos()
    while True:
        held = []
        for m in MOTIONS:
            pool = [c for c in combos if c.motion == m]
            held += rng.sample(pool, HELDOUT_PER_MOTION)
        train = set(combos) - set(held)
        ok = True
        for a, b in itertools.combinations(range(4), 2):
            pairs_all = {(astuple(c)[a], astuple(c)[b]) for c in combos}
            pairs_train = {(astuple(c)[a], astuple(c)[b]) for c in train}
            ok &= pairs_all == pairs_train
        if ok:
            return held


def astuple(c: Combo) -> tuple[str, str, str, str]:
    return (c.colour, c.shape, c.motion, c.background)


def heldout_captions() -> list[str]:
    """The held-out captions shipped with the package (``heldout_captions.txt``)."""
    text = resources.files(__package__).joinpath("heldout_captions.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def heldout_combos() -> list[Combo]:
    return [parse_caption(c) for c in heldout_captions()]


def train_combos() -> list[Combo]:
    held = set(heldout_combos())
    return [c for c in all_combos() if c not in held]


def write_heldout_file(path: str | Path | None = None) -> Path:
    path = Path(path) if path is not None else Path(__file__).with_name("heldout_captions.txt")
    lines = ["# held-out captions of the toy text-to-video model: these (colour, shape, motion, background)",
             "# combinations never occur in training (generated by ieadapt_interp.models.toy.dataset._make_heldout)"]
    lines += [c.caption for c in _make_heldout()]
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------------------------------------------
# rendering


def _lut(names, table) -> torch.Tensor:
    return torch.tensor([table[n] for n in names], dtype=torch.float32) / 255.0


@dataclass
class ClipParams:
    """Per-clip parameters of a batch (all tensors of length B)."""

    colour: torch.Tensor  # long index into COLOURS
    shape: torch.Tensor  # long index into SHAPES
    motion: torch.Tensor  # long index into MOTIONS
    background: torch.Tensor  # long index into BACKGROUNDS
    cx: torch.Tensor  # (B, F) centre x per frame, px
    cy: torch.Tensor  # (B, F)
    half: torch.Tensor  # (B,) half size, px

    def captions(self) -> list[str]:
        cn, bn = list(COLOURS), list(BACKGROUNDS)
        return [
            make_caption(cn[c], SHAPES[s], MOTIONS[m], bn[b])
            for c, s, m, b in zip(self.colour.tolist(), self.shape.tolist(), self.motion.tolist(),
                                  self.background.tolist())
        ]


def sample_params(
    combos: list[Combo] | torch.Tensor,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
    num_frames: int = NUM_FRAMES,
) -> ClipParams:
    """Random positions / sizes for the given combinations (a list of Combo, or a (B, 4) long tensor of
    indices colour, shape, motion, background)."""
    if not isinstance(combos, torch.Tensor):
        cn, bn = list(COLOURS), list(BACKGROUNDS)
        combos = torch.tensor(
            [[cn.index(c.colour), SHAPES.index(c.shape), MOTIONS.index(c.motion), bn.index(c.background)]
             for c in combos], dtype=torch.long)
    idx = combos.to(device)
    B = idx.shape[0]
    gen_dev = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(B, 5, generator=generator, device=gen_dev).to(device)
    motion = idx[:, 2]
    vec = torch.tensor([MOTION_VECTORS[m] for m in MOTIONS], device=device)[motion]  # (B, 2)
    moving = (vec.abs().sum(1) > 0).float()
    disp = DISPLACEMENT[0] + (DISPLACEMENT[1] - DISPLACEMENT[0]) * u[:, 0]
    half = HALF_SIZE[0] + (HALF_SIZE[1] - HALF_SIZE[0]) * u[:, 1]
    along = ALONG_JITTER * (2 * u[:, 2] - 1)
    across = ACROSS_JITTER * (2 * u[:, 3] - 1)
    c = SIZE / 2.0
    t = torch.linspace(-0.5, 0.5, num_frames, device=device)  # (F,)
    # moving: centre path through the middle; perpendicular offset `across`, along offset `along`
    perp = torch.stack([vec[:, 1].abs(), vec[:, 0].abs()], 1)  # axis perpendicular to the motion
    path = vec[:, None, :] * (disp[:, None, None] * t[None, :, None] + along[:, None, None])
    path = path + perp[:, None, :] * across[:, None, None]
    # still: random position within ±STILL_JITTER of the centre
    still_off = STILL_JITTER * (2 * torch.stack([u[:, 2], u[:, 4]], 1) - 1)
    pos = c + moving[:, None, None] * path + (1 - moving)[:, None, None] * still_off[:, None, :]
    return ClipParams(idx[:, 0], idx[:, 1], motion, idx[:, 3], pos[..., 0], pos[..., 1], half)


def render(params: ClipParams, size: int = SIZE) -> torch.Tensor:
    """Render clips as float tensors in [0, 1] of shape (B, F, 3, H, W)."""
    dev = params.cx.device
    ys = torch.arange(size, device=dev, dtype=torch.float32) + 0.5
    xs = ys
    dx = xs[None, None, None, :] - params.cx[:, :, None, None]  # (B, F, 1, W)
    dy = ys[None, None, :, None] - params.cy[:, :, None, None]  # (B, F, H, 1)
    r = params.half[:, None, None, None]
    sd_circle = torch.sqrt(dx * dx + dy * dy) - r
    sd_square = torch.maximum(dx.abs(), dy.abs()) - r
    # upright isosceles triangle, apex at (cx, cy - r), base y = cy + r, base width 2r
    sd_tri = torch.maximum(dy - r, (dx.abs() - (dy + r) / 2) / math.sqrt(1.25))
    shape = params.shape[:, None, None, None]
    sd = torch.where(shape == 0, sd_circle, torch.where(shape == 1, sd_square, sd_tri))
    cov = (0.5 - sd).clamp(0, 1)  # (B, F, H, W) antialiased coverage
    fg = _lut(list(COLOURS), COLOURS).to(dev)[params.colour]  # (B, 3)
    bg = _lut(list(BACKGROUNDS), BACKGROUNDS).to(dev)[params.background]
    cov = cov[:, :, None]
    return bg[:, None, :, None, None] * (1 - cov) + fg[:, None, :, None, None] * cov


def render_captions(captions: list[str], seed: int = 0, device: str | torch.device = "cpu") -> torch.Tensor:
    """Render one clip per caption, (B, F, 3, H, W) in [0, 1], deterministic for a seed."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    return render(sample_params([parse_caption(c) for c in captions], generator=g, device=device))


class ToyVideoSampler:
    """Endless batches of (clips, captions) drawn from the training combinations, deterministic by seed.

    ``clips`` is (B, F, 3, H, W) in [0, 1] on ``device``.
    """

    def __init__(self, seed: int = 0, device: str | torch.device = "cpu", combos: list[Combo] | None = None):
        self.device = torch.device(device)
        self.combos = combos if combos is not None else train_combos()
        cn, bn = list(COLOURS), list(BACKGROUNDS)
        self.table = torch.tensor(
            [[cn.index(c.colour), SHAPES.index(c.shape), MOTIONS.index(c.motion), bn.index(c.background)]
             for c in self.combos], dtype=torch.long, device=self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def state_dict(self) -> dict:
        return {"rng": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["rng"])

    def sample(self, batch_size: int) -> tuple[torch.Tensor, ClipParams]:
        which = torch.randint(len(self.combos), (batch_size,), generator=self.generator, device=self.device)
        params = sample_params(self.table[which], generator=self.generator, device=self.device)
        return render(params), params
