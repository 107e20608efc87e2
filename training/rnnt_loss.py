"""RNN-T loss vectorised over the label axis, fast on CPU.

NeMo's CPU RNN-T losses walk the (T, U) lattice cell by cell. Here each time step is one
batched operation: along u the forward variable is a log-semiring linear recurrence, so
alpha[t, u] = E[t, u] + logcumsumexp_k(alpha[t-1, k] + blank[t-1, k] - E[t, k]), where E holds
the prefix sums of label log-probabilities. Autograd gives the gradient.
"""

from __future__ import annotations

import torch


def rnnt_loss(
    logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor, target_lengths: torch.Tensor, blank: int
) -> torch.Tensor:
    """Per-utterance negative log-likelihood; logits (B, T, U+1, V), targets (B, U)."""
    log_probs = logits.float().log_softmax(-1)
    b, t_max, u1, _ = log_probs.shape
    blank_lp = log_probs[..., blank]  # (B, T, U+1)
    index = targets[:, None, :, None].expand(b, t_max, u1 - 1, 1)
    emit_lp = log_probs[:, :, :-1, :].gather(-1, index).squeeze(-1)  # (B, T, U)
    prefix = torch.cat([emit_lp.new_zeros(b, t_max, 1), emit_lp.cumsum(-1)], dim=-1)  # (B, T, U+1)
    start = torch.full((b, u1), -1e4, dtype=log_probs.dtype, device=log_probs.device)
    start[:, 0] = 0.0
    alphas = []
    previous = None
    for t in range(t_max):
        arriving = start if previous is None else previous + blank_lp[:, t - 1]
        alpha = prefix[:, t] + torch.logcumsumexp(arriving - prefix[:, t], dim=-1)
        alphas.append(alpha)
        previous = alpha
    stacked = torch.stack(alphas, dim=1)  # (B, T, U+1)
    rows = torch.arange(b, device=logits.device)
    last_t, last_u = logit_lengths - 1, target_lengths
    return -(stacked[rows, last_t, last_u] + blank_lp[rows, last_t, last_u])
