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
    blank_lp, emit_lp, _ = _scores(logits, targets, blank, n_durations=0, sigma=0.0)
    b, t_max, u1 = blank_lp.shape
    prefix, blanks = _prefix(emit_lp).unbind(1), blank_lp.unbind(1)  # per frame: see _prefix
    alphas = []
    for t in range(t_max):
        arriving = _start(b, u1, blank_lp) if t == 0 else alphas[-1] + blanks[t - 1]
        alphas.append(prefix[t] + torch.logcumsumexp(arriving - prefix[t], dim=-1))
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
    blank_lp, emit_lp, dur_lp = _scores(logits, targets, blank, len(durations), sigma)  # dur_lp: (B, T, U+1, D)
    b, t_max, u1 = blank_lp.shape
    # Labels emitted at one frame (duration 0) make the within-frame recurrence; without a zero
    # duration every arc moves on in time and alpha is what arrives.
    prefix = _prefix(emit_lp + dur_lp[:, :, :-1, durations.index(0)]).unbind(1) if 0 in durations else None
    moves = [(i, d) for i, d in enumerate(durations) if d > 0]
    move_index = torch.tensor([i for i, _ in moves])
    # What leaving (t, u) by each move adds, blanks then labels: per frame, 2 * moves tensors (B, U+1); a
    # label lands on u + 1, so its rows are shifted up by one.
    leave_blank = blank_lp[..., None] + dur_lp[..., move_index]
    leave_label = torch.nn.functional.pad(emit_lp[..., None] + dur_lp[:, :, :-1, move_index], (0, 0, 1, 0),
                                          value=NEVER)
    leave = [frame.unbind(0) for frame in torch.cat([leave_blank, leave_label], dim=-1).permute(1, 3, 0, 2)]
    alphas: list[torch.Tensor] = []
    for t in range(t_max):
        if t == 0:
            arriving = _start(b, u1, blank_lp)
        else:
            taken = [(k, t - d) for k, (_, d) in enumerate(moves) if d <= t]  # (move, the frame it leaves)
            sources = torch.stack([alphas[f] for _, f in taken])
            sources = torch.cat([sources, torch.nn.functional.pad(sources[..., :-1], (1, 0), value=NEVER)])
            steps = torch.stack([leave[f][k] for k, f in taken] + [leave[f][len(moves) + k] for k, f in taken])
            arriving = torch.logsumexp(sources + steps, dim=0)
        alphas.append(arriving if prefix is None else prefix[t] + torch.logcumsumexp(arriving - prefix[t], -1))
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


def _scores(logits: torch.Tensor, targets: torch.Tensor, blank: int, n_durations: int,
            sigma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From the joint's logits (B, T, U+1, V [+ D]): the log-probabilities (under-normalised by `sigma`) of
    a blank at each (t, u) (B, T, U+1) and of emitting target u at (t, u) (B, T, U), and the durations'
    log-probabilities (B, T, U+1, D)."""
    b, t_max, u1, _ = logits.shape
    index = torch.full((b, t_max, u1, 2), blank, dtype=torch.long, device=logits.device)
    index[:, :, :-1, 0] = targets[:, None, :]  # the last row emits nothing: its pick is unused
    picked, normaliser, durations = _Scores.apply(logits.float(), index, n_durations)
    scores = picked - normaliser[..., None] - sigma
    return scores[..., 1], scores[:, :, :-1, 0], durations


class _Scores(torch.autograd.Function):
    """A few picked token logits, the tokens' log-normaliser and the durations' log-softmax, with a
    gradient written in one pass: a full log-softmax over the joint's (B, T, U+1, V) logits, picked
    from by autograd, costs several passes over that tensor each way (half a transducer loss's time)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, index: torch.Tensor, n_durations: int):
        tokens = logits[..., : logits.shape[-1] - n_durations]
        normaliser = tokens.logsumexp(-1)
        durations = logits[..., tokens.shape[-1] :].log_softmax(-1)
        ctx.save_for_backward(logits, normaliser, index, durations)
        ctx.n_durations = n_durations
        return tokens.gather(-1, index), normaliser, durations

    @staticmethod
    def backward(ctx, d_picked: torch.Tensor, d_normaliser: torch.Tensor, d_durations: torch.Tensor):
        logits, normaliser, index, durations = ctx.saved_tensors
        grad = torch.empty_like(logits)
        n_tokens = logits.shape[-1] - ctx.n_durations
        tokens = grad[..., :n_tokens]
        torch.sub(logits[..., :n_tokens], normaliser[..., None], out=tokens)
        tokens.exp_().mul_(d_normaliser[..., None]).scatter_add_(-1, index, d_picked)
        grad[..., n_tokens:] = d_durations - durations.exp() * d_durations.sum(-1, keepdim=True)
        return grad, None, None


def _prefix(chain: torch.Tensor) -> torch.Tensor:
    """(B, T, U+1): the sums of `chain` along u up to (not including) each u.

    The recurrences take it (and every other per-frame input) apart with one `unbind`: indexing a frame
    at each step would make autograd write each step's gradient into a zeroed copy of the whole
    tensor, quadratic in the frames (a fifth of a training update's time went to those fills)."""
    return torch.cat([chain.new_zeros(*chain.shape[:2], 1), chain.cumsum(-1)], dim=-1)


def _start(b: int, u1: int, like: torch.Tensor) -> torch.Tensor:
    start = torch.full((b, u1), NEVER, dtype=like.dtype, device=like.device)
    start[:, 0] = 0.0
    return start
