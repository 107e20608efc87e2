"""A throwaway LSTM teacher that gets the Conformer off its CTC plateau.

Trained from scratch with CTC alone, the small Conformer emits the same sentence for every input
for thousands of updates (a CPU budget's worth): it has to find the alignment and the acoustic
features at once. A unidirectional LSTM on stacked log-mel frames leaves that plateau within a
few minutes. Its per-frame posteriors then give the Conformer a dense target from its first
update. The teacher sees frames in the order the streaming Conformer does (stack i holds feature
frames 8i-7..8i, as the causal 8x subsampling's output i does), so its posteriors never ask the
student to emit a token before it could have heard it. Only the Conformer is exported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

STACK = 8  # the encoder's subsampling factor
# A fixed affine map of unnormalised log-mel features to roughly zero mean, unit variance on this data.
FEATURE_MEAN, FEATURE_STD = -10.9, 4.0


class Teacher(torch.nn.Module):
    def __init__(self, n_mels: int, n_classes: int, hidden: int = 320, normalised: bool = False) -> None:
        super().__init__()
        self.mean, self.std = (0.0, 1.0) if normalised else (FEATURE_MEAN, FEATURE_STD)
        self.proj = torch.nn.Linear(STACK * n_mels, 256)
        self.rnn = torch.nn.LSTM(256, hidden, num_layers=2, batch_first=True)
        self.out = torch.nn.Linear(hidden, n_classes)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel features (B, n_mels, T) -> CTC log-probabilities (B, T', classes) and their lengths."""
        x, out_lengths = stack_frames((features - self.mean) / self.std, lengths)
        x, _ = self.rnn(self.proj(x))
        return self.out(x).log_softmax(-1), out_lengths


def stack_frames(features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal stacks of STACK frames, aligned with the causal depthwise-striding subsampling."""
    x = F.pad(features, (STACK - 1, 0))
    n = (x.shape[2] + STACK - 1) // STACK
    x = F.pad(x, (0, n * STACK - x.shape[2]))
    stacked = x.transpose(1, 2).reshape(x.shape[0], n, STACK * x.shape[1])
    return stacked, (lengths + 2 * (STACK - 1)) // STACK


def distillation_loss(student: torch.Tensor, student_len: torch.Tensor, teacher: torch.Tensor,
                      teacher_len: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) per frame, averaged over the frames both sequences cover."""
    n = min(student.shape[1], teacher.shape[1])
    mask = (torch.arange(n)[None] < torch.minimum(student_len, teacher_len)[:, None]).float()
    kl = (teacher[:, :n].exp() * (teacher[:, :n] - student[:, :n])).sum(-1)
    return (kl * mask).sum() / mask.sum()
