"""The training transducer losses (RNN-T, TDT) agree with NeMo's reference implementation, value and gradient."""

from unittest import mock

import pytest
import torch
from nemo.collections.asr.losses.rnnt import RNNTLoss
from nemo.collections.asr.losses.rnnt_pytorch import TDTLossPytorch

from training.rnnt_loss import rnnt_loss, tdt_loss


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


@pytest.mark.parametrize("durations", [(0, 1, 2, 3, 4), (1, 2, 4)])
def test_tdt_matches_nemo_reference(durations: tuple[int, ...]) -> None:
    """NeMo's pure-PyTorch TDT reference, run on the CPU: it places its lattice on CUDA by hand
    (`.cuda()`), which is made the identity here; its arithmetic is what is compared."""
    torch.manual_seed(1)
    b, t, u, v = 3, 9, 4, 7
    logits = torch.randn(b, t, u + 1, v + len(durations), requires_grad=True)
    targets = torch.randint(0, v - 1, (b, u))
    t_len, u_len = torch.tensor([9, 7, 4]), torch.tensor([4, 2, 0])
    with mock.patch.object(torch.Tensor, "cuda", lambda self, *_, **__: self):
        reference = TDTLossPytorch(blank=v - 1, durations=list(durations), reduction=None, sigma=0.05)(
            acts=logits, labels=targets, act_lens=t_len, label_lens=u_len
        )
    ours = tdt_loss(logits, targets, t_len, u_len, blank=v - 1, durations=durations, sigma=0.05)
    assert torch.allclose(ours, reference, atol=1e-4)
    grad_ref = torch.autograd.grad(reference.sum(), logits)[0]
    grad_ours = torch.autograd.grad(ours.sum(), logits)[0]
    assert torch.allclose(grad_ours, grad_ref, atol=1e-4)
