"""Train the demo model on CPU within a time budget and export it as a `.nemo` file.

A FastConformer hybrid RNN-T + CTC model (the Parakeet TDT-CTC family, with an RNN-T head
because NeMo's TDT loss needs CUDA), trained with a plain PyTorch loop over NeMo's modules.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from parakeet_serve.engine.loader import quiet_nemo
from training import parallel
from training.blueprint import Blueprint, build_model, train_tokenizer
from training.rnnt_loss import rnnt_loss
from training.teacher import Teacher, distillation_loss

Data = tuple[list[torch.Tensor], list[list[int]]]

ROOT = Path(__file__).resolve().parent
DEMO = Blueprint(
    head="hybrid_rnnt_ctc", n_layers=8, d_model=128, n_heads=4, conv_kernel=9, subsampling_channels=64,
    pred_hidden=160, joint_hidden=160, vocab_size=512,
    spec_augment=False, dropout=0.0,  # it underfits in the budget: regularising only slows it
    streaming=True, att_context=(64, 3),  # 320 ms chunks (4 frames), 5.1 s of left context
)
# The proxy for offline-trained checkpoints (issue 20): the same model trained as Parakeet is, with
# full attention, non-causal convolutions and per-utterance feature normalisation.
DEMO_OFFLINE = dataclasses.replace(DEMO, streaming=False, att_context=(-1, -1))
CTC_WEIGHT = 0.5
TEACHER_SHARE = 0.13  # of the budget: the LSTM teacher
# Then the Conformer learns from the teacher's frame posteriors (plus some CTC); with the
# transducer from the start its prediction network learns the sentence grammar instead.
DISTIL_SHARE = 0.25
DISTIL_CTC_WEIGHT = 0.3
MINUTES, PEAK_LR, BATCH_SECONDS = 105.0, 2.5e-3, 20.0  # per worker; small batches: more updates per minute
WORKERS = 2  # single-threaded processes averaging gradients (training.parallel)
# Besides every utterance alone, runs of 2-3 joined by a pause: a model that only ever heard one sentence
# per clip loses the words after a pause (long files are recognised in pieces of many sentences).
JOINED_SHARE, JOINED_PAUSE_S, JOINED_MAX_S = 0.3, (0.1, 2.0), 24.0
MODELS = ROOT.parent / "service" / "parakeet_serve" / "models"
DEFAULT_OUT = MODELS / "demo.nemo"
OFFLINE_OUT = MODELS / "demo-offline.nemo"


def recipe(offline: bool) -> tuple[Blueprint, Path]:
    """The model to train and where it goes: the demo model, or with `offline` its offline-trained proxy."""
    return (DEMO_OFFLINE, OFFLINE_OUT) if offline else (DEMO, DEFAULT_OUT)


def load(manifest: Path, share: int = 0, shares: int = 1) -> tuple[list[torch.Tensor], list[str]]:
    """Every `shares`-th utterance of the manifest from the `share`-th: audio and text."""
    audios, texts = [], []
    for line in manifest.read_text().splitlines()[share::shares]:
        entry = json.loads(line)
        audio, _ = sf.read(entry["audio_filepath"], dtype="float32")
        audios.append(torch.from_numpy(audio))
        texts.append(entry["text"])
    return audios, texts


def with_joined(data: Data, rng: random.Random, share: float = JOINED_SHARE) -> Data:
    """`data` plus joined examples: runs of 2 or 3 utterances (each in at most one run, `share` of
    them in all) with a pause of silence between them, their tokens one after the other."""
    audios, tokens = data
    order = list(range(len(audios)))
    rng.shuffle(order)
    order = order[: int(len(order) * share)]
    joined_audios, joined_tokens = list(audios), list(tokens)
    while len(order) >= 2:
        run = [order.pop() for _ in range(min(len(order), rng.choice((2, 2, 3))))]
        parts = [audios[run[0]]]
        for i in run[1:]:
            parts += [torch.zeros(round(rng.uniform(*JOINED_PAUSE_S) * 16000)), audios[i]]
        audio = torch.cat(parts)
        if len(audio) <= JOINED_MAX_S * 16000:
            joined_audios.append(audio)
            joined_tokens.append([t for i in run for t in tokens[i]])
    return joined_audios, joined_tokens


def transcripts(manifest: Path) -> list[str]:
    return [json.loads(line)["text"] for line in manifest.read_text().splitlines()]


def batch_stream(lengths: list[int], max_samples: int, rng: random.Random) -> Iterator[tuple[int, list[int]]]:
    """(epoch, batch) for ever: each epoch the utterances in new batches, in a new order."""
    epoch = 0
    while True:
        epoch += 1
        for idx in batches(lengths, max_samples, rng):
            yield epoch, idx


def batches(lengths: list[int], max_samples: int, rng: random.Random) -> list[list[int]]:
    """Length-sorted buckets (little padding), each up to `max_samples` of padded audio, shuffled."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i] + rng.random() * 8000)
    out, current = [], []
    for i in order:
        if current and lengths[i] * (len(current) + 1) > max_samples:
            out.append(current)
            current = []
        current.append(i)
    out.append(current)
    rng.shuffle(out)
    return out


def collate(audios: list[torch.Tensor], tokens: list[list[int]], idx: list[int]) -> tuple[torch.Tensor, ...]:
    lens = torch.tensor([len(audios[i]) for i in idx])
    signal = torch.zeros(len(idx), int(lens.max()))
    tlens = torch.tensor([len(tokens[i]) for i in idx])
    targets = torch.zeros(len(idx), int(tlens.max()), dtype=torch.long)
    for row, i in enumerate(idx):
        signal[row, : len(audios[i])] = audios[i]
        targets[row, : len(tokens[i])] = torch.tensor(tokens[i])
    return signal, lens, targets, tlens


def ctc_loss(log_probs: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, tlens: torch.Tensor,
             blank: int) -> torch.Tensor:
    """CTC per target token, from (B, T, classes) log-probabilities."""
    return torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), targets, lengths, tlens, blank=blank,
                                        zero_infinity=True)


def hybrid_loss(model, signal, lens, targets, tlens) -> torch.Tensor:
    """The transducer's and CTC's losses, both per target token."""
    encoded, encoded_len = model.forward(input_signal=signal, input_signal_length=lens)
    blank = model.ctc_decoder.num_classes_with_blank - 1
    ctc = ctc_loss(model.ctc_decoder(encoder_output=encoded), encoded_len, targets, tlens, blank)
    decoded, target_len, _ = model.decoder(targets=targets, target_length=tlens)
    joint = model.joint(encoder_outputs=encoded, decoder_outputs=decoded)
    rnnt = (rnnt_loss(joint, targets, encoded_len, target_len, blank=model.decoder.blank_idx) / tlens).mean()
    return (1 - CTC_WEIGHT) * rnnt + CTC_WEIGHT * ctc


def distilled_loss(model, teacher: Teacher, signal, lens, targets, tlens) -> torch.Tensor:
    """The teacher's frame posteriors as the CTC head's target, plus a little CTC."""
    with torch.no_grad():  # featurised once, for the teacher and the student
        features, feature_len = model.preprocessor(input_signal=signal, length=lens)
        target, target_len = teacher(features, feature_len)
    encoded, encoded_len = model.forward(processed_signal=features, processed_signal_length=feature_len)
    log_probs = model.ctc_decoder(encoder_output=encoded)
    blank = model.ctc_decoder.num_classes_with_blank - 1
    ctc = ctc_loss(log_probs, encoded_len, targets, tlens, blank)
    return distillation_loss(log_probs, encoded_len, target, target_len) + DISTIL_CTC_WEIGHT * ctc


def teacher_loss(model, teacher: Teacher, signal, lens, targets, tlens) -> torch.Tensor:
    with torch.no_grad():
        features, feature_len = model.preprocessor(input_signal=signal, length=lens)
    log_probs, lengths = teacher(features, feature_len)
    return ctc_loss(log_probs, lengths, targets, tlens, blank=log_probs.shape[-1] - 1)


def center_first_convolution(model, audios: list[torch.Tensor], sample: int = 200) -> float:
    """Shift the first subsampling convolution's bias so its input starts out centred.

    A streaming model takes log-mel features without per-utterance normalisation; they sit around
    -10, so at initialisation half the first layer's channels are always off and the rest barely
    vary, and the encoder stays on its plateau. Only the initial bias changes: the model and its
    inference are those of an unnormalised model.
    """
    with torch.no_grad():
        means = []
        for audio in audios[:sample]:
            features, length = model.preprocessor(input_signal=audio[None], length=torch.tensor([len(audio)]))
            means.append(features[0, :, : int(length[0])].mean())
        mean = float(torch.stack(means).mean())
        conv = model.encoder.pre_encode.conv[0]
        conv.bias -= mean * conv.weight.sum(dim=(1, 2, 3))
    return mean


def learning_rate(step: int, progress: float, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay over the time budget to 2% of the peak."""
    return peak * min(1.0, (step + 1) / warmup) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def fit(name: str, params: list[torch.nn.Parameter], loss_fn: Callable[..., torch.Tensor], data: Data,
        minutes: float, peak_lr: float, batch_seconds: float, rng: random.Random) -> None:
    """AdamW over length-bucketed batches until `minutes` have passed; loss_fn(batch, progress).

    With several workers each takes batches of its own utterances and the gradients are averaged,
    so an update sees `workers` batches; all agree on the progress, so they stop together.
    """
    audios, tokens = data
    # fused: one kernel for all parameters (5.6 against 11.8 ms per update here, with clipping)
    optimizer = torch.optim.AdamW(params, lr=peak_lr, betas=(0.9, 0.98), weight_decay=1e-3, fused=True)
    started, step, running = time.monotonic(), 0, []
    budget = minutes * 60
    for epoch, idx in batch_stream([len(a) for a in audios], int(batch_seconds * 16000), rng):
        progress = parallel.furthest((time.monotonic() - started) / budget)
        if progress >= 1:
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, progress, peak_lr, warmup=300)
        loss = loss_fn(collate(audios, tokens, idx), progress)
        if parallel.furthest(float(not torch.isfinite(loss))):
            log(f"{name} step {step}: non-finite loss, batch skipped")
            continue
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        parallel.average_gradients(params)
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
        running.append(float(loss))
        step += 1
        if step % 100 == 0:
            log(f"{name} epoch {epoch} step {step} loss {np.mean(running[-100:]):.3f} "
                f"lr {group['lr']:.2e} {(time.monotonic() - started) / 60:.1f} min")
    log(f"{name}: {step} steps, {epoch} epochs")


def log(message: str) -> None:
    """Print from the first worker only (the others say the same)."""
    if parallel.rank() == 0:
        print(message, flush=True)


def train(
    manifest: Path, out: Path, minutes: float, seed: int, peak_lr: float, batch_seconds: float,
    resume: Path | None = None, bp: Blueprint = DEMO, workers: int = WORKERS,
) -> None:
    """Train within `minutes`: teacher, distillation, then the hybrid; `resume` goes straight to the hybrid."""
    parallel.launch(_train, workers, manifest, out, minutes, seed, peak_lr, batch_seconds, resume, bp)


def _train(
    manifest: Path, out: Path, minutes: float, seed: int, peak_lr: float, batch_seconds: float,
    resume: Path | None, bp: Blueprint,
) -> None:
    """One worker of `train` (or the only one), on its share of the utterances."""
    torch.set_flush_denormal(True)  # tiny probabilities in the lattice would otherwise crawl through denormals
    quiet_nemo()
    torch.manual_seed(seed)
    rng = random.Random(seed + parallel.rank())
    audios, texts = load(manifest, parallel.rank(), parallel.world())
    if resume is not None:
        from nemo.collections.asr.models import ASRModel

        model = ASRModel.restore_from(str(resume), map_location="cpu").train()
    else:
        tokenizer = ROOT / "data" / "model" / "tokenizer"
        if parallel.rank() == 0:
            train_tokenizer(tokenizer, bp.vocab_size, transcripts(manifest))
        parallel.barrier()
        model = build_model(bp, tokenizer, seed).train()
        if bp.streaming:
            log(f"features centred from a mean of {center_first_convolution(model, audios):.2f}")
    parallel.broadcast_parameters(model)
    data = with_joined((audios, [model.tokenizer.text_to_ids(t) for t in texts]), rng)
    params = sum(p.numel() for p in model.parameters())
    log(f"{len(audios)} utterances ({len(data[0]) - len(audios)} joined runs besides), "
        f"{sum(map(len, data[0])) / 16000 / 3600:.2f} h per worker, {parallel.world()} "
        f"workers; model {params / 1e6:.2f} M params")
    student_minutes = minutes
    if resume is None:
        # per-utterance normalised features need no fixed rescaling
        teacher = Teacher(bp.n_mels, model.ctc_decoder.num_classes_with_blank, normalised=not bp.streaming).train()
        parallel.broadcast_parameters(teacher)
        fit("teacher", list(teacher.parameters()), lambda batch, _: teacher_loss(model, teacher, *batch), data,
            minutes * TEACHER_SHARE, PEAK_LR, BATCH_SECONDS, rng)
        teacher.eval().requires_grad_(False)
        student_minutes = minutes * (1 - TEACHER_SHARE)
        distil_until = DISTIL_SHARE / (1 - TEACHER_SHARE)
    else:
        distil_until = 0.0

    def student_loss(batch: tuple[torch.Tensor, ...], progress: float) -> torch.Tensor:
        if progress < distil_until:
            return distilled_loss(model, teacher, *batch)
        return hybrid_loss(model, *batch)

    fit("conformer", list(model.parameters()), student_loss, data, student_minutes, peak_lr, batch_seconds, rng)
    if parallel.rank() == 0:
        model.eval()
        out.parent.mkdir(parents=True, exist_ok=True)
        model.save_to(str(out))
        log(f"saved {out} ({out.stat().st_size / 1e6:.1f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=ROOT / "data" / "train.jsonl")
    parser.add_argument("--out", type=Path, help=f"default {DEFAULT_OUT.name}, with --offline {OFFLINE_OUT.name}")
    parser.add_argument("--offline", action="store_true", help="the offline-trained proxy (full attention)")
    parser.add_argument("--minutes", type=float, default=MINUTES)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lr", type=float, default=PEAK_LR)
    parser.add_argument("--batch-seconds", type=float, default=BATCH_SECONDS)
    parser.add_argument("--workers", type=int, default=WORKERS, help="single-threaded training processes")
    parser.add_argument("--resume", type=Path, help="continue training this .nemo model with a fresh schedule")
    a = parser.parse_args()
    bp, out = recipe(a.offline)
    train(a.manifest, a.out or out, a.minutes, a.seed, a.lr, a.batch_seconds, a.resume, bp, a.workers)


if __name__ == "__main__":
    main()
