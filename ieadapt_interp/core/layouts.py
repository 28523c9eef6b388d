"""Token layouts of the attention call: how the ``[B', head, query]`` rows of one
``F.scaled_dot_product_attention`` call map onto denoiser rows and video frames.

``row`` is a denoiser batch row (a CFG branch × sample); ``per`` is the number of attention-batch
elements each row spans (``B' = row · per``).

=====================  ==============================  ==========================================
layout                 attention batch / sequence      pooled map (per row)
=====================  ==============================  ==========================================
:class:`FramesInBatch`  ``B' = row·F + frame``         ``[head, frame, query_bin, key_bin]``
:class:`FramesInSequence` ``B' = row·P + position``;   ``[head, query_frame, key_frame]`` (mean
                        the query index is the frame    over positions)
:class:`JointTextVideo`  ``B' = row``; ``[text, frame   ``[head, query_bin, key_bin]``
                        0, frame 1, …]`` tokens
:class:`VideoSequence`  ``B' = row``; ``[frame 0, frame   ``[head, query_bin, key_bin]``
                        1, …]`` tokens, no text
:class:`JointVideoText`  ``B' = row``; ``[frame 0, …,      ``[head, query_bin, key_bin]``
                        text]`` tokens
=====================  ==============================  ==========================================

A :class:`JointTextVideo` frame is a *token* frame: with temporal patching (CogVideoX 1.5,
``patch_size_t = 2``) one token frame covers ``patch_size_t`` latent frames.

>>> import torch
>>> x = torch.arange(12.0).view(6, 1, 2)            # 2 rows × 3 frames in batch, 1 head, 2 queries
>>> video, text = LAYOUTS["frames_in_batch"].to_frames(x, n_rows=2, per=3, num_frames=3, text_len=0)
>>> video.shape, text
(torch.Size([2, 1, 3]), None)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .maps import pooled_map


def _reduce(x: torch.Tensor, dim: int, how: str) -> torch.Tensor:
    return x.mean(dim) if how == "mean" else x.sum(dim)


@dataclass(frozen=True)
class Layout:
    """Base class: one token layout. Subclasses implement :meth:`to_frames` and :meth:`pool`."""

    name: str
    map_dims: tuple[str, ...]  # dims of one pooled map per row (after ``step, row``)
    has_text = False  # the sequence starts with the text tokens (the call's ``encoder_hidden_states``)

    def to_frames(self, x: torch.Tensor, n_rows: int, per: int, num_frames: int, text_len: int,
                  how: str = "mean") -> tuple[torch.Tensor, torch.Tensor | None]:
        """Reduce per-query-row values ``[B', head, query]`` to ``([row, head, frame], text [row, head] | None)``.

        ``how`` is ``"mean"`` (entropy) or ``"sum"`` (energies) over the query rows of each frame.
        """
        raise NotImplementedError

    def pool(self, q: torch.Tensor, k: torch.Tensor, scale: float, mask: torch.Tensor | None,
             size: tuple[int, int], n_rows: int, per: int) -> torch.Tensor:
        """Pooled maps of ``n_rows`` rows (``q, k: [n_rows·per, head, n, dim]``) → ``[row, *map_dims]``."""
        raise NotImplementedError

    def kept_maps(self, n_rows: int, n_elements: int) -> int:
        """How many pooled ``[head, query_bin, key_bin]`` maps one call keeps (for the memory budget)."""
        return n_elements

    def per_map(self, x: torch.Tensor, n_rows: int, per: int, how: str = "mean") -> torch.Tensor:
        """Per-query-row values ``[B', head, query]`` reduced over each attention map's rows → ``[row, head, map]``.

        A map is one attention element: a frame's ``HW × HW`` map (frames in batch), a position's ``F × F``
        map (frames in sequence) or the whole sequence (joint) — the paper's unit "one map".
        """
        heads, n_q = x.shape[1], x.shape[2]
        return _reduce(x.view(n_rows, per, heads, n_q), -1, how).transpose(1, 2)


class FramesInBatch(Layout):
    """Each attention element is one frame of one row (spatial self- and cross-attention)."""

    def to_frames(self, x, n_rows, per, num_frames, text_len, how="mean"):
        heads, n_q = x.shape[1], x.shape[2]
        return _reduce(x.view(n_rows, per, heads, n_q), -1, how).transpose(1, 2), None

    def pool(self, q, k, scale, mask, size, n_rows, per):
        pooled = pooled_map(q, k, scale, mask, size)
        return pooled.view(n_rows, per, *pooled.shape[1:]).transpose(1, 2)


class FramesInSequence(Layout):
    """Each attention element is one spatial position of one row; queries are frames (motion modules)."""

    def to_frames(self, x, n_rows, per, num_frames, text_len, how="mean"):
        heads, n_q = x.shape[1], x.shape[2]
        return _reduce(x.view(n_rows, per, heads, n_q), 1, how), None

    def pool(self, q, k, scale, mask, size, n_rows, per):
        a = torch.softmax(torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale, dim=-1)
        return a.view(n_rows, per, *a.shape[1:]).mean(1)

    def kept_maps(self, n_rows, n_elements):
        return n_rows  # the mean over positions is kept


class JointTextVideo(Layout):
    """One element per row; the sequence is ``text_len`` text tokens, then the video tokens frame by frame."""

    has_text = True

    def to_frames(self, x, n_rows, per, num_frames, text_len, how="mean"):
        heads = x.shape[1]
        video = x[..., text_len:]
        if video.shape[-1] % num_frames:
            raise RuntimeError(
                f"{video.shape[-1]} video tokens do not split into {num_frames} token frames; the adapter's "
                "temporal patch size does not fit this model.")
        video = _reduce(video.reshape(n_rows, heads, num_frames, video.shape[-1] // num_frames), -1, how)
        text = (_reduce(x[..., :text_len], -1, how) if text_len
                else torch.full((n_rows, heads), float("nan"), device=x.device))
        return video, text

    def pool(self, q, k, scale, mask, size, n_rows, per):
        return pooled_map(q, k, scale, mask, size)


def _token_frames(video: torch.Tensor, n_rows: int, num_frames: int, how: str) -> torch.Tensor:
    """``[row, head, frame·tokens]`` video rows (frame-major) → ``[row, head, frame]``."""
    if video.shape[-1] % num_frames:
        raise RuntimeError(
            f"{video.shape[-1]} video tokens do not split into {num_frames} token frames; the adapter's "
            "temporal patch size does not fit this model.")
    return _reduce(video.reshape(n_rows, video.shape[1], num_frames, video.shape[-1] // num_frames), -1, how)


class VideoSequence(Layout):
    """One element per row; the query sequence is the video tokens frame by frame, no text in it.

    Wan / LTX-Video 3-D self-attention over video tokens (keys: the same tokens) and their
    cross-attention (keys: the text tokens).

    >>> x = torch.arange(8.0).view(1, 1, 8)            # 1 row, 1 head, 2 frames × 4 tokens
    >>> LAYOUTS["video"].to_frames(x, 1, 1, num_frames=2, text_len=0)[0]
    tensor([[[1.5000, 5.5000]]])
    """

    def to_frames(self, x, n_rows, per, num_frames, text_len, how="mean"):
        return _token_frames(x, n_rows, num_frames, how), None

    def pool(self, q, k, scale, mask, size, n_rows, per):
        return pooled_map(q, k, scale, mask, size)


class JointVideoText(JointTextVideo):
    """One element per row; the sequence is the video tokens frame by frame, then ``text_len`` text tokens.

    HunyuanVideo (dual- and single-stream blocks) and Mochi put the text after the video.

    >>> x = torch.arange(6.0).view(1, 1, 6)            # 2 frames × 2 tokens, then 2 text tokens
    >>> video, text = LAYOUTS["joint_video_text"].to_frames(x, 1, 1, num_frames=2, text_len=2)
    >>> video, text
    (tensor([[[0.5000, 2.5000]]]), tensor([[4.5000]]))
    """

    def to_frames(self, x, n_rows, per, num_frames, text_len, how="mean"):
        n_video = x.shape[-1] - text_len
        video = _token_frames(x[..., :n_video], n_rows, num_frames, how)
        text = (_reduce(x[..., n_video:], -1, how) if text_len
                else torch.full((n_rows, x.shape[1]), float("nan"), device=x.device))
        return video, text


LAYOUTS: dict[str, Layout] = {
    "frames_in_batch": FramesInBatch("frames_in_batch", ("head", "frame", "query_bin", "key_bin")),
    "frames_in_sequence": FramesInSequence("frames_in_sequence", ("head", "query_frame", "key_frame")),
    "joint": JointTextVideo("joint", ("head", "query_bin", "key_bin")),
    "video": VideoSequence("video", ("head", "query_bin", "key_bin")),
    "joint_video_text": JointVideoText("joint_video_text", ("head", "query_bin", "key_bin")),
}


def get_layout(name: str) -> Layout:
    """The :class:`Layout` named by an adapter (``AttentionLayer.layout``)."""
    return LAYOUTS[name]
