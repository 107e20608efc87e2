"""Train the demo model on CPU in resumable runs and export it as a `.nemo` file.

A FastConformer hybrid TDT + CTC model (the Parakeet TDT-CTC family), trained with a plain PyTorch
loop over NeMo's modules: an LSTM teacher, distillation into the CTC head, then both heads. The
schedule counts updates (warm-up, a constant learning rate, then a decay over the last updates), so
a run stopped anywhere continues from its checkpoint as if it had not stopped, and a run can be
spread over as many sittings as the machine allows.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import io
import json
import math
import random
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from parakeet_serve.engine.loader import quiet_nemo
from training import checkpoint, parallel
from training.blueprint import CTC_WEIGHT, TDT_DURATIONS, TDT_SIGMA, Blueprint, build_model, train_tokenizer
from training.checkpoint import Checkpoint, Position, Progress
from training.rnnt_loss import rnnt_loss, tdt_loss
from training.teacher import Teacher, distillation_loss

Data = tuple[list[torch.Tensor], list[list[int]]]

ROOT = Path(__file__).resolve().parent
DEMO = Blueprint(
    head="hybrid_tdt_ctc", n_layers=8, d_model=128, n_heads=4, conv_kernel=9, subsampling_channels=64,
    pred_hidden=160, joint_hidden=160, vocab_size=512,
    spec_augment=False, dropout=0.0,  # it underfits in the budget: regularising only slows it
    streaming=True, att_context=(64, 3),  # 320 ms chunks (4 frames), 5.1 s of left context
)
# The proxy for offline-trained checkpoints (issue 20): the same model trained as Parakeet is, with
# full attention, non-causal convolutions and per-utterance feature normalisation.
DEMO_OFFLINE = dataclasses.replace(DEMO, streaming=False, att_context=(-1, -1))
# The schedule, in updates. The teacher first; then the Conformer learns from the teacher's frame
# posteriors (plus some CTC) for DISTIL_UPDATES (with the transducer from the start its prediction
# network learns the sentence grammar instead), then both heads until UPDATES, the learning rate
# decaying over the last DECAY_UPDATES.
TEACHER_UPDATES, DISTIL_UPDATES, UPDATES, DECAY_UPDATES = 20000, 6000, 80000, 8000
DISTIL_CTC_WEIGHT = 0.3
WARMUP = 300
CHECKPOINT_EVERY = 500  # updates (about two minutes on 2 cores)
PEAK_LR, BATCH_SECONDS = 2.5e-3, 20.0  # per worker; small batches: more updates per minute
WORKERS = 2  # single-threaded processes averaging gradients (training.parallel)
# Besides every utterance alone, runs of 2-3 joined by a pause: a model that only ever heard one sentence
# per clip loses the words after a pause (long files are recognised in pieces of many sentences).
JOINED_SHARE, JOINED_PAUSE_S, JOINED_MAX_S = 0.3, (0.1, 2.0), 24.0
# Vocal-tract length perturbation: each utterance's mel axis stretched by a factor in this range,
# half of them, as a voice with a longer or shorter vocal tract would move its formants.
WARP_SHARE, WARP_RANGE = 0.5, (0.88, 1.12)
MODELS = ROOT.parent / "service" / "parakeet_serve" / "models"
DEFAULT_OUT = MODELS / "demo.nemo"
OFFLINE_OUT = MODELS / "demo-offline.nemo"
CHECKPOINT = ROOT / "data" / "model" / "checkpoint.pt"  # its tokenizer is kept beside it


@dataclasses.dataclass(frozen=True)
class Plan:
    """How long each phase runs, in updates, and how long this sitting may take."""

    teacher: int = TEACHER_UPDATES
    distil: int = DISTIL_UPDATES
    updates: int = UPDATES  # the Conformer's, distillation included
    decay: int = DECAY_UPDATES
    minutes: float = math.inf  # this sitting's wall-clock budget: then a checkpoint, and stop
    sitting_updates: int = 2**62  # the most updates this sitting makes (of any phase)
    peak_lr: float = PEAK_LR
    batch_seconds: float = BATCH_SECONDS


def recipe(offline: bool) -> Blueprint:
    """The model to train: the demo model, or with `offline` its offline-trained proxy."""
    return DEMO_OFFLINE if offline else DEMO


def default_out(bp: Blueprint) -> Path:
    """Where a trained model goes by default: the shipped file of its kind."""
    return DEFAULT_OUT if bp.streaming else OFFLINE_OUT


def load(manifest: Path, share: int = 0, shares: int = 1) -> tuple[list[torch.Tensor], list[str]]:
    """Every `shares`-th utterance of the manifest from the `share`-th: 16-bit audio (half the memory
    of floats: 40,000 utterances) and text."""
    audios, texts = [], []
    for line in manifest.read_text().splitlines()[share::shares]:
        entry = json.loads(line)
        audio, _ = sf.read(entry["audio_filepath"], dtype="int16")
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
            parts += [torch.zeros(round(rng.uniform(*JOINED_PAUSE_S) * 16000), dtype=audios[i].dtype), audios[i]]
        audio = torch.cat(parts)
        if len(audio) <= JOINED_MAX_S * 16000:
            joined_audios.append(audio)
            joined_tokens.append([t for i in run for t in tokens[i]])
    return joined_audios, joined_tokens


def transcripts(manifest: Path) -> list[str]:
    return [json.loads(line)["text"] for line in manifest.read_text().splitlines()]


def batch_stream(lengths: list[int], max_samples: int, seed: int,
                 start: Position) -> Iterator[tuple[Position, list[int]]]:
    """(position, batch) for ever from `start`: each epoch the utterances in new batches, in an
    order that follows from (seed, epoch) alone, so a position is all a resumed run needs."""
    epoch, index = start.epoch, start.index
    while True:
        order = batches(lengths, max_samples, random.Random(seed * 100_003 + epoch))
        for i in range(index, len(order)):
            yield Position(epoch, i), order[i]
        epoch, index = epoch + 1, 0


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
        signal[row, : len(audios[i])] = as_float(audios[i])
        targets[row, : len(tokens[i])] = torch.tensor(tokens[i])
    return signal, lens, targets, tlens


def as_float(audio: torch.Tensor) -> torch.Tensor:
    return audio.float() / 32768 if audio.dtype == torch.int16 else audio


def warp_mels(features: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Vocal-tract length perturbation of (B, mels, T) features: WARP_SHARE of the utterances get
    their mel axis stretched or squeezed by a factor drawn from WARP_RANGE (linear interpolation)."""
    b, mels, frames = features.shape
    factors = torch.empty(b).uniform_(*WARP_RANGE, generator=generator)
    factors = torch.where(torch.rand(b, generator=generator) < WARP_SHARE, factors, torch.ones(b))
    source = (torch.arange(mels)[None] / factors[:, None]).clamp(max=mels - 1)  # where each bin reads
    low = source.floor().long()
    high = (low + 1).clamp(max=mels - 1)
    weight = (source - low)[..., None]
    pick = lambda index: features.gather(1, index[..., None].expand(b, mels, frames))  # noqa: E731
    return pick(low) * (1 - weight) + pick(high) * weight


def featurise(model, signal: torch.Tensor, lens: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():  # the featuriser has no weights to learn
        features, feature_len = model.preprocessor(input_signal=signal, length=lens)
    return warp_mels(features, generator), feature_len


def ctc_loss(log_probs: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, tlens: torch.Tensor,
             blank: int) -> torch.Tensor:
    """CTC per target token, from (B, T, classes) log-probabilities."""
    return torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), targets, lengths, tlens, blank=blank,
                                        zero_infinity=True)


def hybrid_loss(model, features, feature_len, targets, tlens, durations: tuple[int, ...] | None) -> torch.Tensor:
    """The transducer's (TDT with `durations`, else RNN-T) and CTC's losses, both per target token."""
    encoded, encoded_len = model.forward(processed_signal=features, processed_signal_length=feature_len)
    blank = model.ctc_decoder.num_classes_with_blank - 1
    ctc = ctc_loss(model.ctc_decoder(encoder_output=encoded), encoded_len, targets, tlens, blank)
    decoded, target_len, _ = model.decoder(targets=targets, target_length=tlens)
    joint = model.joint(encoder_outputs=encoded, decoder_outputs=decoded)
    blank = model.decoder.blank_idx
    if durations:
        transducer = tdt_loss(joint, targets, encoded_len, target_len, blank, durations, TDT_SIGMA)
    else:
        transducer = rnnt_loss(joint, targets, encoded_len, target_len, blank)
    return (1 - CTC_WEIGHT) * (transducer / tlens).mean() + CTC_WEIGHT * ctc


def distilled_loss(model, teacher: Teacher, features, feature_len, targets, tlens) -> torch.Tensor:
    """The teacher's frame posteriors as the CTC head's target, plus a little CTC."""
    with torch.no_grad():
        target, target_len = teacher(features, feature_len)
    encoded, encoded_len = model.forward(processed_signal=features, processed_signal_length=feature_len)
    log_probs = model.ctc_decoder(encoder_output=encoded)
    blank = model.ctc_decoder.num_classes_with_blank - 1
    ctc = ctc_loss(log_probs, encoded_len, targets, tlens, blank)
    return distillation_loss(log_probs, encoded_len, target, target_len) + DISTIL_CTC_WEIGHT * ctc


def teacher_loss(teacher: Teacher, features, feature_len, targets, tlens) -> torch.Tensor:
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
            features, length = model.preprocessor(input_signal=as_float(audio)[None], length=torch.tensor([len(audio)]))
            means.append(features[0, :, : int(length[0])].mean())
        mean = float(torch.stack(means).mean())
        conv = model.encoder.pre_encode.conv[0]
        conv.bias -= mean * conv.weight.sum(dim=(1, 2, 3))
    return mean


def learning_rate(step: int, end: int, decay: int, peak: float, warm_from: int = 0) -> float:
    """Linear warm-up from `warm_from` (where the optimiser started), constant, then a cosine decay over
    the last `decay` updates before `end` to 2% of the peak: any checkpoint before the decay can be
    continued, or decayed into a finished model."""
    into_decay = min(1.0, max(0, step - (end - decay)) / decay) if decay else 0.0
    warm = min(1.0, (step - warm_from + 1) / WARMUP)
    return peak * warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * into_decay)))


@dataclasses.dataclass
class Phase:
    """One phase of the run: what it trains, on which loss, until which update."""

    name: str
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
    end: int
    decay: int


def optimizer_for(params: list[torch.nn.Parameter], peak_lr: float) -> torch.optim.Optimizer:
    # fused: one kernel for all parameters (5.6 against 11.8 ms per update here, with clipping)
    return torch.optim.AdamW(params, lr=peak_lr, betas=(0.9, 0.98), weight_decay=1e-3, fused=True)


@dataclasses.dataclass
class Sitting:
    """What is left of this sitting: it ends at the deadline or after so many updates."""

    deadline: float
    updates_left: int

    def over(self) -> bool:
        return bool(parallel.furthest(float(time.monotonic() >= self.deadline or self.updates_left <= 0)))


def fit(phase: Phase, model, data: Data, plan: Plan, progress: Progress, seed: int, sitting: Sitting,
        save: Callable[[], None]) -> bool:
    """AdamW updates over length-bucketed batches from `progress` until the phase's end (True) or
    the sitting's end (False); a checkpoint every CHECKPOINT_EVERY updates.

    With several workers each takes batches of its own utterances and the gradients are averaged,
    so an update sees `workers` batches; all agree on the deadline, so they stop together.
    """
    audios, tokens = data
    me = parallel.rank()
    started, running = time.monotonic(), []
    stream = batch_stream([len(a) for a in audios], int(plan.batch_seconds * 16000), seed + me, progress.positions[me])
    for position, idx in stream:
        if progress.step >= phase.end or sitting.over():
            break
        lr = learning_rate(progress.step, phase.end, phase.decay, plan.peak_lr, progress.warm_from)
        for group in phase.optimizer.param_groups:
            group["lr"] = lr
        # the warp's draws follow from the update, so a resumed run draws what it would have
        stream_id = (seed * 64 + me) * 2 + (phase.name == "conformer")
        generator = torch.Generator().manual_seed(stream_id * 10**8 + progress.step)
        signal, lens, targets, tlens = collate(audios, tokens, idx)
        features, feature_len = featurise(model, signal, lens, generator)
        loss = phase.loss_fn(features, feature_len, targets, tlens, progress.step)
        progress.positions[me] = Position(position.epoch, position.index + 1)
        if parallel.furthest(float(not torch.isfinite(loss))):
            log(f"{phase.name} step {progress.step}: non-finite loss, batch skipped")
            continue
        phase.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        parallel.average_gradients(phase.params)
        torch.nn.utils.clip_grad_norm_(phase.params, 5.0)
        phase.optimizer.step()
        running.append(float(loss))
        progress.step += 1
        sitting.updates_left -= 1
        if progress.step % 100 == 0:
            log(f"{phase.name} epoch {position.epoch} step {progress.step} loss {np.mean(running[-100:]):.3f} "
                f"lr {lr:.2e} {(time.monotonic() - started) / 60:.1f} min")
        if progress.step % CHECKPOINT_EVERY == 0:
            save()
    log(f"{phase.name}: at step {progress.step} of {phase.end}, epoch {progress.positions[me].epoch}")
    return progress.step >= phase.end


def log(message: str) -> None:
    """Print from the first worker only (the others say the same)."""
    if parallel.rank() == 0:
        print(message, flush=True)


def train(manifest: Path, out: Path | None, plan: Plan, seed: int, resume: Path | None = None, bp: Blueprint = DEMO,
          workers: int = WORKERS, checkpoint_path: Path = CHECKPOINT, init: Path | None = None) -> None:
    """Train (or continue `resume`) for the sitting's minutes: teacher, distillation, then the
    hybrid; the model is exported to `out` (by default its kind's shipped file) when the plan's last update
    is done. A new run with `init` (a `.nemo` transducer of the same encoder) starts the hybrid phase from
    its weights and tokenizer instead (`warm_start`)."""
    parallel.launch(_train, workers, manifest, out, plan, seed, resume, bp, checkpoint_path, init)


def _train(manifest: Path, out: Path | None, plan: Plan, seed: int, resume: Path | None, bp: Blueprint,
           checkpoint_path: Path, init: Path | None) -> None:
    """One worker of `train` (or the only one), on its share of the utterances."""
    torch.set_flush_denormal(True)  # tiny probabilities in the lattice would otherwise crawl through denormals
    quiet_nemo()
    sitting = Sitting(time.monotonic() + plan.minutes * 60, plan.sitting_updates)
    tokenizer = checkpoint_path.parent / "tokenizer"
    state = checkpoint.load(resume) if resume is not None else None
    if state is not None:  # the checkpoint's model and seed, whatever the flags say
        bp, seed = state.blueprint, state.seed
    torch.manual_seed(seed)
    audios, texts = load(manifest, parallel.rank(), parallel.world())
    if state is None and init is not None:
        model, progress = warm_start(init, bp, seed, tokenizer, plan.distil)
    else:
        model, progress = _start_model(manifest, bp, seed, state, audios, tokenizer, plan.batch_seconds)
    data = with_joined((audios, [model.tokenizer.text_to_ids(t) for t in texts]), random.Random(seed + parallel.rank()))
    log(f"{len(audios)} utterances ({len(data[0]) - len(audios)} joined runs besides), "
        f"{sum(map(len, data[0])) / 16000 / 3600:.2f} h per worker, {parallel.world()} workers; model "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params; {progress.phase} at step {progress.step}")
    # per-utterance normalised features need no fixed rescaling
    teacher = Teacher(bp.n_mels, model.ctc_decoder.num_classes_with_blank, normalised=not bp.streaming)
    if state is not None:
        teacher.load_state_dict(state.teacher)
    parallel.broadcast_parameters(teacher)
    _continue_random(state, seed)  # last, so that nothing built above draws from it
    resumed = state.progress.phase if state is not None else None
    while progress.phase != "done":
        phase = _phase(progress.phase, plan, model, teacher, TDT_DURATIONS if "tdt" in bp.head else None)
        if resumed == progress.phase:
            phase.optimizer.load_state_dict(state.optimizer)
        resumed = None
        teacher.train(phase.name == "teacher").requires_grad_(phase.name == "teacher")
        model.train()
        save = functools.partial(_save, checkpoint_path, tokenizer, bp, seed, plan.batch_seconds, progress, model,
                                 teacher, phase.optimizer)
        if not fit(phase, model, data, plan, progress, seed, sitting, save):
            save()
            return
        if phase.name == "teacher":  # saved next by the Conformer's phase, with its own optimiser
            progress.phase, progress.step = "conformer", 0
        else:
            progress.phase = "done"
            save()
    if parallel.rank() == 0:
        export(model, out or default_out(bp))


def _continue_random(state: Checkpoint | None, seed: int) -> None:
    """This worker's random draws (dropout's, NeMo's) go on where the checkpoint's stopped, or start from
    the seed and the worker's rank."""
    if state is not None:
        torch_state, python_state = state.rng[parallel.rank()]
        torch.set_rng_state(torch_state)
        random.setstate(python_state)
    else:
        torch.manual_seed(seed * 64 + parallel.rank())
        random.seed(seed * 64 + parallel.rank())


def _phase(name: str, plan: Plan, model, teacher: Teacher, durations: tuple[int, ...] | None) -> Phase:
    """The teacher's phase, or the Conformer's: distillation, then the hybrid loss."""
    if name == "teacher":
        params = list(teacher.parameters())
        return Phase(name, params, optimizer_for(params, PEAK_LR),
                     lambda f, fl, t, tl, _: teacher_loss(teacher, f, fl, t, tl), plan.teacher, plan.teacher)

    def student_loss(features, feature_len, targets, tlens, step: int) -> torch.Tensor:
        if step < plan.distil:
            return distilled_loss(model, teacher, features, feature_len, targets, tlens)
        return hybrid_loss(model, features, feature_len, targets, tlens, durations)

    params = list(model.parameters())
    return Phase(name, params, optimizer_for(params, plan.peak_lr), student_loss, plan.updates, plan.decay)


def _start_model(manifest: Path, bp: Blueprint, seed: int, state: Checkpoint | None, audios: list[torch.Tensor],
                 tokenizer: Path, batch_seconds: float) -> tuple[object, Progress]:
    """The model and the run's progress: a checkpoint's, or new ones with a new tokenizer."""
    if state is not None:
        if len(state.progress.positions) != parallel.world():
            raise SystemExit(f"the checkpoint was made by {len(state.progress.positions)} workers: resume with as many")
        if state.batch_seconds != batch_seconds:
            raise SystemExit(f"the checkpoint's data positions count {state.batch_seconds:g}-second batches: resume "
                             f"with --batch-seconds {state.batch_seconds:g}")
        if parallel.rank() == 0:
            checkpoint.write_tokenizer(state.tokenizer, tokenizer)
        parallel.barrier()
        model = build_model(bp, tokenizer, seed).train()
        model.load_state_dict(state.model)
        return model, state.progress
    if parallel.rank() == 0:
        train_tokenizer(tokenizer, bp.vocab_size, transcripts(manifest))
    parallel.barrier()
    model = build_model(bp, tokenizer, seed).train()
    if bp.streaming:
        log(f"features centred from a mean of {center_first_convolution(model, audios):.2f}")
    parallel.broadcast_parameters(model)
    return model, Progress(positions=[Position() for _ in range(parallel.world())])


def warm_start(init: Path, bp: Blueprint, seed: int, tokenizer: Path, distil: int) -> tuple[object, Progress]:
    """A model of shape `bp` holding a trained `.nemo` transducer's tokenizer and weights, and progress at
    the hybrid phase's start (the teacher and distillation are for a model that knows nothing yet).

    An RNN-T's joint becomes a TDT's: its token and blank outputs are copied, and the duration outputs
    NeMo appends after them start untrained. Any other difference in shape is refused.
    """
    if parallel.rank() == 0:
        _unpack_tokenizer(init, tokenizer)
    parallel.barrier()
    model = build_model(bp, tokenizer, seed).train()
    source = _nemo_weights(init)
    target = model.state_dict()
    for name, weights in target.items():
        given = source.get(name)
        if given is None or not _fits(name, given.shape, weights.shape):
            raise SystemExit(f"{init} does not fit the {bp.head} model: {name} is "
                             f"{None if given is None else tuple(given.shape)}, wanted {tuple(weights.shape)}")
        weights[tuple(slice(0, n) for n in given.shape)] = given
    log(f"started from {init}: {sum(int(source[n].numel()) for n in target)} weights")
    return model, Progress("conformer", distil, [Position() for _ in range(parallel.world())], warm_from=distil)


def _fits(name: str, given: torch.Size, wanted: torch.Size) -> bool:
    """The same shape; or, in the joint, the outputs of an RNN-T that TDT extends with durations."""
    grows = name.startswith("joint.") and len(given) == len(wanted) and given[1:] == wanted[1:] and given[0] < wanted[0]
    return given == wanted or grows


def _unpack_tokenizer(nemo_file: Path, directory: Path) -> None:
    """The SentencePiece model and vocabulary a `.nemo` file carries, under the names `build_model` reads
    (NeMo prefixes each packed file with a hash)."""
    directory.mkdir(parents=True, exist_ok=True)
    with tarfile.open(nemo_file) as packed:
        for member in packed.getmembers():
            for name in ("tokenizer.model", "vocab.txt"):
                if member.name.endswith("_" + name):
                    (directory / name).write_bytes(packed.extractfile(member).read())


def _nemo_weights(nemo_file: Path) -> dict[str, torch.Tensor]:
    with tarfile.open(nemo_file) as packed:
        member = next(m for m in packed.getmembers() if m.name.endswith("model_weights.ckpt"))
        return torch.load(io.BytesIO(packed.extractfile(member).read()), map_location="cpu")


def _save(path: Path, tokenizer: Path, bp: Blueprint, seed: int, batch_seconds: float, progress: Progress, model,
          teacher: Teacher, optimizer: torch.optim.Optimizer) -> None:
    """Every worker's position and random state, gathered, and the rest from the first worker (the others hold
    the same)."""
    positions = parallel.gather(progress.positions[parallel.rank()])
    rng = parallel.gather((torch.get_rng_state(), random.getstate()))
    if parallel.rank() == 0:
        state = Checkpoint(bp, seed, Progress(progress.phase, progress.step, positions), model.state_dict(),
                           teacher.state_dict(), optimizer.state_dict(), checkpoint.tokenizer_files(tokenizer), rng,
                           batch_seconds)
        checkpoint.save(path, state)
    parallel.barrier()


def export(model, out: Path) -> None:
    model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save_to(str(out))
    log(f"saved {out} ({out.stat().st_size / 1e6:.1f} MB)")


def export_checkpoint(path: Path, out: Path | None) -> None:
    """A checkpoint's Conformer as a `.nemo` file, wherever the run is (to evaluate it mid-run)."""
    quiet_nemo()
    state = checkpoint.load(path)
    with tempfile.TemporaryDirectory() as tokenizer:
        model = build_model(state.blueprint, checkpoint.write_tokenizer(state.tokenizer, Path(tokenizer)), state.seed)
        model.load_state_dict(state.model)
        export(model, out or default_out(state.blueprint))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=ROOT / "data" / "train.jsonl")
    parser.add_argument("--out", type=Path, help=f"default {DEFAULT_OUT.name}, for the offline proxy "
                        f"{OFFLINE_OUT.name}")
    parser.add_argument("--offline", action="store_true", help="the offline-trained proxy (full attention); a "
                        "resumed run is the checkpoint's model")
    parser.add_argument("--minutes", type=float, default=math.inf, help="this sitting's budget, then a checkpoint")
    parser.add_argument("--sitting-updates", type=int, default=Plan.sitting_updates,
                        help="the most updates this sitting makes, then a checkpoint")
    parser.add_argument("--updates", type=int, default=UPDATES, help="the Conformer's updates in the whole run")
    parser.add_argument("--decay", type=int, default=DECAY_UPDATES, help="updates of learning-rate decay at the end")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lr", type=float, default=PEAK_LR)
    parser.add_argument("--batch-seconds", type=float, default=BATCH_SECONDS)
    parser.add_argument("--workers", type=int, default=WORKERS, help="single-threaded training processes")
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT, help="where the run's state is kept")
    parser.add_argument("--resume", type=Path, help="continue the run saved in this checkpoint")
    parser.add_argument("--init", type=Path, help="start a new run's hybrid phase from this trained .nemo "
                        "transducer (an RNN-T's joint grows TDT's duration outputs)")
    parser.add_argument("--export", type=Path, help="only write this checkpoint's model to --out")
    a = parser.parse_args()
    if a.export:
        export_checkpoint(a.export, a.out)
        return
    plan = Plan(updates=a.updates, decay=a.decay, minutes=a.minutes, sitting_updates=a.sitting_updates, peak_lr=a.lr,
                batch_seconds=a.batch_seconds)
    train(a.manifest, a.out, plan, a.seed, a.resume, recipe(a.offline), a.workers, a.checkpoint, a.init)


if __name__ == "__main__":
    main()
