"""The distillation teacher sees frames as the streaming encoder does, and its loss compares what it should."""

import torch
from nemo.collections.asr.parts.submodules.subsampling import ConvSubsampling

from training.teacher import distillation_loss, stack_frames

N_MELS = 80


def causal_subsampling() -> ConvSubsampling:
    torch.manual_seed(0)
    return ConvSubsampling(subsampling="dw_striding", subsampling_factor=8, feat_in=N_MELS, feat_out=32,
                           conv_channels=16, activation=torch.nn.ReLU(), is_causal=True).eval()


def test_stacks_are_as_many_as_the_encoder_frames() -> None:
    sub = causal_subsampling()
    for length in (1, 7, 8, 9, 16, 57, 100, 129):
        features = torch.randn(1, N_MELS, length)
        stacked, stacked_len = stack_frames(features, torch.tensor([length]))
        with torch.no_grad():
            encoded, encoded_len = sub(features.transpose(1, 2), torch.tensor([length]))
        assert int(stacked_len) == int(encoded_len) == stacked.shape[1] == encoded.shape[1], length


def first_changed(before: torch.Tensor, after: torch.Tensor) -> int:
    return int(torch.nonzero((before - after).abs().amax(-1)[0] > 1e-6)[0])


def test_teacher_never_hears_a_frame_before_the_encoder_does() -> None:
    sub = causal_subsampling()
    features = torch.randn(1, N_MELS, 64)
    length = torch.tensor([64])
    with torch.no_grad():
        encoded, _ = sub(features.transpose(1, 2), length)
    stacked, _ = stack_frames(features, length)
    for k in range(64):
        changed = features.clone()
        changed[0, :, k] += 5.0
        with torch.no_grad():
            encoded_after, _ = sub(changed.transpose(1, 2), length)
        stacked_after, _ = stack_frames(changed, length)
        assert first_changed(stacked, stacked_after) >= first_changed(encoded, encoded_after), k


def test_distillation_loss_is_zero_only_where_student_matches_teacher_within_lengths() -> None:
    torch.manual_seed(0)
    teacher = torch.randn(2, 10, 6).log_softmax(-1)
    lengths = torch.tensor([10, 6])
    assert float(distillation_loss(teacher, lengths, teacher, lengths)) == 0.0
    padded = teacher.clone()
    padded[1, 6:] = torch.randn(4, 6).log_softmax(-1)  # past the second sequence's end: ignored
    assert float(distillation_loss(padded, lengths, teacher, lengths)) == 0.0
    student = torch.randn(2, 10, 6).log_softmax(-1)
    assert float(distillation_loss(student, lengths, teacher, lengths)) > 0.1
