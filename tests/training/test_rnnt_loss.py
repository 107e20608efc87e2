"""The training RNN-T loss agrees with NeMo's reference implementation, value and gradient."""

import torch
from nemo.collections.asr.losses.rnnt import RNNTLoss

from training.rnnt_loss import rnnt_loss


def test_matches_nemo_reference_on_ragged_batch() -> None:
    torch.manual_seed(0)
    b, t, u, v = 4, 20, 6, 11
    logits = torch.randn(b, t, u + 1, v, requires_grad=True)
    targets = torch.randint(0, v - 1, (b, u))
    t_len, u_len = torch.tensor([20, 17, 9, 20]), torch.tensor([6, 3, 2, 0])
    reference = RNNTLoss(num_classes=v - 1, loss_name="pytorch", reduction=None)(
        log_probs=logits, targets=targets, input_lengths=t_len, target_lengths=u_len
    )
    ours = rnnt_loss(logits, targets, t_len, u_len, blank=v - 1)
    assert torch.allclose(ours, reference, atol=1e-4)
    grad_ref = torch.autograd.grad(reference.sum(), logits)[0]
    grad_ours = torch.autograd.grad(ours.sum(), logits)[0]
    assert torch.allclose(grad_ours, grad_ref, atol=1e-4)
