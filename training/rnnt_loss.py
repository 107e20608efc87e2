"""Transducer losses (RNN-T and TDT) vectorised over the label axis, fast on CPU.

NeMo's CPU RNN-T losses walk the (T, U) lattice cell by cell, and its TDT losses run only on CUDA.
Here each time step is one batched operation: along u the forward variable is a log-semiring
linear recurrence, so alpha[t, u] = E[t, u] + logcumsumexp_k(arriving[t, k] - E[t, k]), where E
holds the prefix sums of the log-probabilities of emitting label after label without moving on in
time, and `arriving` what reaches (t, k) from earlier frames. Autograd gives the gradient.
"""

from __future__ import annotations

import torch

NEVER = -1e4  # log-probability of an unreachable cell: finite, so no NaN reaches the gradient


def rnnt_loss(
    logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor, target_lengths: torch.Tensor, blank: int
) -> torch.Tensor:
    """Per-utterance negative log-likelihood; logits (B, T, U+1, V), targets (B, U)."""
    log_probs = logits.float().log_softmax(-1)
    b, t_max, u1, _ = log_probs.shape
    blank_lp = log_probs[..., blank]  # (B, T, U+1)
    emit_lp = _emitted(log_probs, targets)
    prefix = _prefix(emit_lp)
    alphas = []
    for t in range(t_max):
        arriving = _start(b, u1, log_probs) if t == 0 else alphas[-1] + blank_lp[:, t - 1]
        alphas.append(prefix[:, t] + torch.logcumsumexp(arriving - prefix[:, t], dim=-1))
    stacked = torch.stack(alphas, dim=1)  # (B, T, U+1)
    rows = torch.arange(b, device=logits.device)
    last_t, last_u = logit_lengths - 1, target_lengths
    return -(stacked[rows, last_t, last_u] + blank_lp[rows, last_t, last_u])


def tdt_loss(
    logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor, target_lengths: torch.Tensor,
    blank: int, durations: tuple[int, ...], sigma: float = 0.0,
) -> torch.Tensor:
    """Per-utterance negative log-likelihood of a token-and-duration transducer (Xu et al., 2023).

    logits (B, T, U+1, V + len(durations)): token logits, then duration logits. Each emission
    (a label, or a blank) also chooses how many frames to move on; a blank moves at least one. The
    label logits are under-normalised by `sigma`, as NeMo's TDT loss does.
    """
    n_dur = len(durations)
    log_probs = logits[..., :-n_dur].float().log_softmax(-1) - sigma
    dur_lp = logits[..., -n_dur:].float().log_softmax(-1)  # (B, T, U+1, D)
    b, t_max, u1, _ = log_probs.shape
    blank_lp = log_probs[..., blank]
    emit_lp = _emitted(log_probs, targets)
    # Labels emitted at one frame (duration 0) make the within-frame recurrence; without a zero
    # duration every arc moves on in time and alpha is what arrives.
    prefix = _prefix(emit_lp + dur_lp[:, :, :-1, durations.index(0)]) if 0 in durations else None
    moves = [(i, d) for i, d in enumerate(durations) if d > 0]
    move_index = torch.tensor([i for i, _ in moves])
    # What leaving (t, u) by each move adds, blanks then labels: (T, 2 * moves, B, U+1); a label
    # lands on u + 1, so its rows are shifted up by one.
    leave_blank = blank_lp[..., None] + dur_lp[..., move_index]
    leave_label = torch.nn.functional.pad(emit_lp[..., None] + dur_lp[:, :, :-1, move_index], (0, 0, 1, 0),
                                          value=NEVER)
    leave = torch.cat([leave_blank, leave_label], dim=-1).permute(1, 3, 0, 2)
    alphas: list[torch.Tensor] = []
    for t in range(t_max):
        if t == 0:
            arriving = _start(b, u1, log_probs)
        else:
            taken = [(k, t - d) for k, (_, d) in enumerate(moves) if d <= t]  # (move, the frame it leaves)
            frames = [f for _, f in taken] * 2
            kinds = [k for k, _ in taken] + [len(moves) + k for k, _ in taken]
            sources = torch.stack([alphas[f] for _, f in taken])
            sources = torch.cat([sources, torch.nn.functional.pad(sources[..., :-1], (1, 0), value=NEVER)])
            arriving = torch.logsumexp(sources + leave[frames, kinds], dim=0)
        alphas.append(arriving if prefix is None else prefix[:, t] + torch.logcumsumexp(arriving - prefix[:, t], -1))
    stacked = torch.stack(alphas, dim=1)  # (B, T, U+1)
    rows = torch.arange(b, device=logits.device)
    last_u = target_lengths
    # The lattice ends with a blank that moves exactly onto the last frame's end.
    ends = []
    for i, d in moves:
        t = logit_lengths - d
        tc = t.clamp(min=0)
        end = stacked[rows, tc, last_u] + blank_lp[rows, tc, last_u] + dur_lp[rows, tc, last_u, i]
        ends.append(torch.where(t >= 0, end, torch.full_like(end, NEVER)))
    return -torch.logsumexp(torch.stack(ends), dim=0)


def _emitted(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, T, U): the log-probability at (t, u) of emitting target u."""
    b, t_max, u1, _ = log_probs.shape
    index = targets[:, None, :, None].expand(b, t_max, u1 - 1, 1)
    return log_probs[:, :, :-1, :].gather(-1, index).squeeze(-1)


def _prefix(chain: torch.Tensor) -> torch.Tensor:
    """(B, T, U+1): the sums of `chain` along u up to (not including) each u."""
    return torch.cat([chain.new_zeros(*chain.shape[:2], 1), chain.cumsum(-1)], dim=-1)


def _start(b: int, u1: int, like: torch.Tensor) -> torch.Tensor:
    start = torch.full((b, u1), NEVER, dtype=like.dtype, device=like.device)
    start[:, 0] = 0.0
    return start
