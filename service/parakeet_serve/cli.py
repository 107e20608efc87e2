"""Command line: `parakeet-serve serve` runs the server, `parakeet-serve transcribe` is a client.

Every `serve` flag is generated from the settings fields (`--max-audio-seconds` for
`PARAKEET_MAX_AUDIO_SECONDS`), so flags and variables cannot drift apart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from parakeet_serve import __version__
from parakeet_serve.errors import ParakeetError
from parakeet_serve.host_memory import freeze_loaded_objects, retain_freed_memory
from parakeet_serve.logs import configure_logging
from parakeet_serve.settings import Settings, env_name, load_settings

_SHORT_FLAGS = {"model_id": "--model"}


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except ParakeetError as exc:
        print(f"parakeet-serve: {exc}", file=sys.stderr)
        raise SystemExit(2 if args.command == "serve" else 1) from None
    except KeyboardInterrupt:  # Ctrl-C: stop quietly, with the shell's code for it
        raise SystemExit(130) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parakeet-serve", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"parakeet-serve {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the Riva-compatible gRPC server")
    _add_settings_flags(serve)
    serve.set_defaults(run=_run_serve)

    warmup = commands.add_parser(
        "warmup", help="load the model (filling the cache), recognise the bundled sample, judge it, print one JSON line"
    )
    _add_settings_flags(warmup)
    warmup.add_argument("--expected-text", help="words the sample must give (default: exact text for the demo "
                        "model, any words for others)")
    warmup.add_argument("--max-wer", type=float, default=0.0, help="word error rate allowed against --expected-text")
    warmup.add_argument("--termination-log", type=Path, default=Path("/dev/termination-log"),
                        help="also write the JSON line here when the file exists (Kubernetes' termination message)")
    warmup.set_defaults(run=_run_warmup)

    demo = commands.add_parser(
        "demo", help="start a server on the bundled demo model, transcribe a bundled sample through gRPC, stop"
    )
    demo.add_argument("file", type=Path, nargs="?", help="audio file instead of the bundled sample")
    demo.set_defaults(run=_run_demo)

    export = commands.add_parser("export", help="write a model as ONNX graphs for PARAKEET_BACKEND=onnx "
                                 "(onnx-asr's directory layout)")
    export.add_argument("--model", default="demo", help="hub id, .nemo path or demo")
    export.add_argument("--out", type=Path, required=True, help="the directory to write")
    export.add_argument("--int8", action="store_true", help="also write int8 graphs (dynamic quantisation)")
    context_s = Settings.model_fields["stream_context_seconds"].default
    export.add_argument("--stream-context-s", type=float, default=context_s,
                        help="left context of the streaming graphs of a model trained with full attention "
                        "(PARAKEET_STREAM_CONTEXT_SECONDS for this backend; fixed in the graphs)")
    export.set_defaults(run=_run_export)

    evaluate = commands.add_parser("eval", help="word and character error rates of a model on a NeMo manifest")
    evaluate.add_argument("--model", default="demo", help="hub id, .nemo path or demo")
    evaluate.add_argument("--manifest", type=Path, help="JSON lines with audio_filepath, duration, text "
                          "(default: the demo model's held-out set)")
    evaluate.add_argument("--decoder", default="auto", choices=["auto", "tdt", "rnnt", "ctc"])
    evaluate.add_argument("--batch-size", type=int, default=16)
    evaluate.add_argument("--boost", type=Path, help="phrases, one per line, to boost: the error rates with and "
                          "without, on the utterances that contain one and on the others")
    evaluate.add_argument("--boost-value", type=float, default=50.0, help="the phrases' boost (Riva's scale)")
    evaluate.add_argument("--lead-silence-s", type=float, default=0.0, help="silence put before each clip")
    evaluate.set_defaults(run=_run_eval)

    bench = commands.add_parser("bench", help="benchmark a server (or one started here)")
    modes = bench.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", help="HOST:PORT of a running server (plaintext); default: start one on --model")
    common.add_argument("--model", default="demo", help="the model to serve (and, offline, to run in process)")
    common.add_argument("--manifest", type=Path, help="NeMo manifest (default: the demo model's held-out set)")
    common.add_argument("--files", type=int, default=0, help="use only the manifest's first N files (0: all)")
    common.add_argument("--repeat", type=int, default=1, help="use the files this many times over (fast servers)")
    common.add_argument("--join-s", type=float, default=0.0, help="join consecutive files (0.3 s apart) into clips "
                        "of at least this many seconds: long-form audio from short files")
    common.add_argument("--json", type=Path, help="also write the run (machine, model, settings, figures) here")

    offline = modes.add_parser("offline", parents=[common], help="Recognize at concurrency N: RTFx and latency")
    offline.add_argument("--concurrency", type=int, default=8)
    offline.add_argument("--channels", type=int, default=1, help="connections the callers share in turn (a server "
                         "with several worker processes gets each connection on one of them)")
    offline.add_argument("--no-in-process", action="store_true", help="skip the in-process engine comparison")
    offline.add_argument("--rounds", type=int, default=3, help="alternate server and in-process runs; best counts")
    offline.add_argument("--pcm", action="store_true", help="send the files decoded, as 16 kHz LINEAR_PCM (the "
                         "server then times no codec, as the in-process run)")
    offline.add_argument("--nemo-transcribe", action="store_true", help="each round also times NeMo's own "
                         "transcribe() on the same files (a .nemo model), the reference to beat")
    offline.add_argument("--boost", type=Path, help="phrases, one per line: each round also sends every request "
                         "with them boosted, for the throughput ratio")
    offline.add_argument("--boost-value", type=float, default=50.0, help="the phrases' boost (Riva's scale)")
    offline.set_defaults(run=_run_bench_offline)

    stream = modes.add_parser("stream", parents=[common], help="N concurrent real-time streams of an evaluation set")
    stream.add_argument("--streams", type=int, default=8, help="streams at once (with --ramp: the first count)")
    stream.add_argument("--capacity-multiple", type=float, default=0.0,
                        help="instead of --streams, this many times the streams the server admits (overload)")
    stream.add_argument("--chunk-ms", type=float, default=100.0, help="audio per message, sent in real time")
    stream.add_argument("--gap-s", type=float, default=1.5, help="silence after each file")
    stream.add_argument("--files-per-stream", type=int, default=0, help="0 shares the manifest between the streams")
    stream.add_argument("--stop-history-ms", type=int, default=0, help="endpointing silence (0: server default)")
    stream.add_argument("--fast", action="store_true", help="send as fast as possible instead of in real time")
    stream.add_argument("--stagger-s", type=float, default=1.0, help="spread the streams' starts evenly over this "
                        "many seconds, as independent callers are (0: all at once, in phase)")
    stream.add_argument("--ramp", action="store_true",
                        help="find the most streams whose p95 end of speech -> final stays within --objective-ms")
    stream.add_argument("--objective-ms", type=float, default=1050.0, help="the ramp's latency objective")
    stream.add_argument("--max-streams", type=int, default=4096, help="where the ramp stops doubling")
    stream.set_defaults(run=_run_bench_stream)

    transcribe = commands.add_parser("transcribe", help="recognise an audio file through a running server")
    transcribe.add_argument("file", type=Path, nargs="?", help="audio file: WAV, FLAC, Ogg (Opus, Vorbis), MP3, "
                            "M4A/MP4 or WebM, or headerless audio with --encoding and --rate (default: the bundled "
                            "sample)")
    transcribe.add_argument("--encoding", choices=["pcm", "mulaw", "alaw"], help="the file is headerless audio: "
                            "16-bit little-endian PCM, mu-law or A-law")
    transcribe.add_argument("--rate", type=int, default=0, help="sample rate of headerless audio (Hz)")
    transcribe.add_argument("--channels", type=int, default=1, help="channels of headerless audio")
    transcribe.add_argument("--server", default="localhost:50051", help="HOST:PORT of the server")
    transcribe.add_argument("--tls", action="store_true", help="connect with TLS (system roots unless --ca)")
    transcribe.add_argument("--ca", type=Path, help="PEM CA bundle that signed the server certificate")
    transcribe.add_argument("--cert", type=Path, help="client certificate for mutual TLS")
    transcribe.add_argument("--key", type=Path, help="client private key for mutual TLS")
    transcribe.add_argument("--token", help="bearer token, when the server requires one")
    transcribe.add_argument("--language-code", default="en-US")
    transcribe.add_argument("--no-punctuation", action="store_true", help="ask for text without punctuation")
    transcribe.add_argument("--words", action="store_true", help="print word start/end times and confidences")
    transcribe.add_argument("--alternatives", type=int, default=1, help="how many hypotheses to print")
    transcribe.add_argument("--check", action="store_true",
                            help="first require health SERVING, then fail unless the served model recognises "
                                 "the bundled sample (exactly, for the demo model)")
    transcribe.set_defaults(run=_run_transcribe)
    return parser


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    for name, field in Settings.model_fields.items():
        flags = [f"--{name.replace('_', '-')}"] + ([_SHORT_FLAGS[name]] if name in _SHORT_FLAGS else [])
        help_text = f"{field.description or ''} [{env_name(name)}]".strip()
        if field.annotation is bool:
            parser.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(*flags, dest=name, default=None, metavar="VALUE", help=help_text)


def _run_serve(args: argparse.Namespace) -> None:
    settings = load_settings(**{name: getattr(args, name) for name in Settings.model_fields})
    configure_logging(settings.log_level)
    if settings.workers > 1:
        from parakeet_serve.workers import run_workers

        raise SystemExit(run_workers(settings))
    from parakeet_serve.app import serve_until_stopped  # NeMo and torch load only when serving

    retain_freed_memory(settings.host_memory_retain_mb)  # before any thread takes an arena of its own
    asyncio.run(serve_until_stopped(settings))


def _run_warmup(args: argparse.Namespace) -> None:
    from parakeet_serve.warmup import failed_report, leave_termination_message, run_warmup

    settings = load_settings(**{name: getattr(args, name) for name in Settings.model_fields})
    configure_logging(settings.log_level)
    try:
        report = run_warmup(settings, args.expected_text, args.max_wer)
        line, ok = report.json(), report.ok
    except ParakeetError as exc:  # the model did not load: the line says why
        line, ok = failed_report(settings.model_id, str(exc)), False
    print(line, flush=True)
    leave_termination_message(args.termination_log, line)
    if not ok:
        raise SystemExit(1)


def _run_demo(args: argparse.Namespace) -> None:
    from parakeet_serve.warmup import sample_path

    settings = load_settings(model_id="demo", host="127.0.0.1", port=0, metrics_host="127.0.0.1", metrics_port=0,
                             log_level="WARNING")
    configure_logging(settings.log_level)
    sample = args.file or sample_path()
    print("\n".join(asyncio.run(_demo(settings, sample))))


async def _demo(settings: Settings, sample: Path) -> list[str]:
    from parakeet_serve.app import Application
    from parakeet_serve.client import ClientOptions, transcribe_file

    app = Application(settings)
    await app.start()
    try:
        await app.load()
        options = ClientOptions(server=f"127.0.0.1:{app.port}", word_times=True)
        lines = await asyncio.to_thread(transcribe_file, sample, options)
    finally:
        await app.drain()
    reference = sample.with_suffix(".txt")
    expected = [f"expected: {reference.read_text().strip()}"] if reference.is_file() else []
    return [f"{sample.name} via gRPC on port {app.port}:", *lines, *expected]


def _run_export(args: argparse.Namespace) -> None:
    from parakeet_serve.engine import export_onnx

    configure_logging("WARNING")
    for path in export_onnx(args.model, args.out, int8=args.int8, stream_context_s=args.stream_context_s):
        print(path)


def _run_eval(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from parakeet_serve.engine import load_engine
    from parakeet_serve.evaluation import demo_manifest, evaluate, read_manifest, split_by_phrases
    from parakeet_serve.word_boost import BoostLimits, SpeechContext, WordBoost, word_boost

    configure_logging("WARNING")
    manifest = args.manifest or demo_manifest()
    entries = read_manifest(manifest)
    engine = load_engine(args.model, decoder=args.decoder)

    def bar(batches: Any) -> Any:
        return tqdm(batches, desc=manifest.name, unit="batch", file=sys.stderr)

    def run(subset: Sequence[Any], boost: WordBoost | None) -> Any:
        def transcribe(audios: Sequence[Any]) -> list[str]:
            return [t.best.text for t in engine.transcribe(audios, boosts=[boost] * len(audios))]

        return evaluate(transcribe, subset, engine.sample_rate, args.batch_size, progress=bar,
                        lead_silence_s=args.lead_silence_s)

    print(f"{args.model} ({engine.info.decoder}) on {manifest}: {run(entries, None).summary()}")
    if args.boost:
        phrases = tuple(line.strip() for line in args.boost.read_text().splitlines() if line.strip())
        boost = word_boost([SpeechContext(phrases, args.boost_value)], BoostLimits(len(phrases), 10_000))
        with_phrase, others = split_by_phrases(entries, phrases)
        for name, subset in (("containing a boosted phrase", with_phrase), ("the others", others)):
            print(f"  {name}: without boosting {run(subset, None).summary()}")
            print(f"  {name}: boosted at {args.boost_value:g}  {run(subset, boost).summary()}")


def _run_bench_offline(args: argparse.Namespace) -> None:
    from riva.client.proto import riva_asr_pb2

    from parakeet_serve.app import engine_for
    from parakeet_serve.bench import offline

    settings = load_settings(model_id=args.model)
    retain_freed_memory(settings.host_memory_retain_mb)  # the in-process engine's memory as the server keeps it
    contexts = [riva_asr_pb2.SpeechContext(phrases=[p.strip() for p in args.boost.read_text().splitlines()
                                                    if p.strip()], boost=args.boost_value)] if args.boost else []
    server_runs, boosted_runs, engine_runs, encoder_runs, reference_runs = [], [], [], [], []
    with _bench_entries(args) as entries, _bench_target(args) as (target, context):
        options = offline.OfflineOptions(  # the server says what its batches hold
            concurrency=args.concurrency, rounds=args.rounds, pcm=args.pcm, channels=args.channels,
            max_batch=_served_parameter(context, "max_batch_size"),
        )
        engine = None if args.no_in_process else engine_for(settings)
        nemo_model = _nemo_model(args.model) if args.nemo_transcribe else None
        freeze_loaded_objects()  # as the server does once loaded
        for n in range(1, options.rounds + 1):  # the sides take turns, never sharing the machine
            with _progress(f"round {n}: server", "file") as bar:
                server_runs.append(asyncio.run(offline.recognize_all(target, entries, options, bar.update)))
            if contexts:
                with _progress(f"round {n}: server, boosted", "file") as bar:
                    boosted_runs.append(asyncio.run(offline.recognize_all(target, entries, options, bar.update,
                                                                          contexts)))
            if engine is not None:
                with _progress(f"round {n}: in process", "file") as bar:
                    engine_runs.append(offline.run_in_process(engine, entries, options.batch, bar.update))
                with _progress(f"round {n}: encoder only", "file") as bar:
                    encoder_runs.append(offline.run_encoder_only(engine, entries, options.batch, bar.update))
            if nemo_model is not None:
                print(f"round {n}: NeMo transcribe()", file=sys.stderr)
                reference_runs.append(offline.run_nemo_transcribe(nemo_model, entries, options.batch))
    report = offline.report(options, server_runs, engine_runs, boosted_runs, reference_runs, encoder_runs)
    _print_and_save(args, f"Recognize of {len(entries)} files against {target}:", report, "offline",
                    {**context, "options": dataclasses.asdict(options)})


def _served_parameter(context: dict[str, Any], name: str) -> int:
    """A number the bench's server reports about its model (`GetRivaSpeechRecognitionConfig`)."""
    return int(context["server"]["models"][0]["parameters"][name])


def _nemo_model(model_id: str) -> Any:
    """The model as NeMo's own API loads it, on the GPU when there is one."""
    import torch

    from parakeet_serve.engine.loader import load_nemo_model, quiet_nemo, resolve_model_file

    quiet_nemo()
    s = load_settings(model_id=model_id)
    model = load_nemo_model(resolve_model_file(s.model_id, s.model_cache_dir, s.hub_offline, s.model_revision or None))
    return model.to("cuda" if torch.cuda.is_available() else "cpu").eval()


def _run_bench_stream(args: argparse.Namespace) -> None:
    from parakeet_serve.bench.stream import StreamBenchOptions, bench_stream, ramp_streams

    options = StreamBenchOptions(
        streams=args.streams, chunk_ms=args.chunk_ms, gap_s=args.gap_s, realtime=not args.fast,
        stop_history_ms=args.stop_history_ms, files_per_stream=args.files_per_stream, stagger_s=args.stagger_s,
    )
    with (_bench_entries(args) as entries, _bench_target(args) as (target, context),
          _progress("streamed", "s", 1 / 16000) as bar):
        if args.capacity_multiple:
            admits = _served_parameter(context, "max_streams")
            options = dataclasses.replace(options, streams=math.ceil(args.capacity_multiple * admits))
        if args.ramp:
            report: Any = asyncio.run(ramp_streams(target, entries, options, args.objective_ms, args.max_streams,
                                                   progress=bar.update, on_trial=bar.write))
        else:
            report = asyncio.run(bench_stream(target, entries, options, progress=bar.update))
    title = "ramp of real-time streams" if args.ramp else f"{options.streams} streams"
    settings = {**dataclasses.asdict(options), "objective_ms": args.objective_ms if args.ramp else None}
    _print_and_save(args, f"{title} against {target}:", report, "stream-ramp" if args.ramp else "stream",
                    {**context, "options": settings})


@contextlib.contextmanager
def _bench_entries(args: argparse.Namespace) -> Iterator[list[Any]]:
    """The files to send: the manifest's (its first --files), joined into clips of --join-s seconds
    (in a folder that lasts as long as the run), --repeat times over."""
    from parakeet_serve.bench.clips import joined
    from parakeet_serve.evaluation import demo_manifest, read_manifest

    entries = read_manifest(args.manifest or demo_manifest())
    entries = entries[: args.files] if args.files else entries
    with tempfile.TemporaryDirectory(prefix="parakeet-bench-") as folder:
        if args.join_s:
            entries = joined(entries, args.join_s, Path(folder))
        yield entries * args.repeat


@contextlib.contextmanager
def _bench_target(args: argparse.Namespace) -> Iterator[tuple[str, dict[str, Any]]]:
    """The server to measure (started here unless --server) and what the JSON says about it."""
    from parakeet_serve.bench.report import describe_server

    with contextlib.ExitStack() as stack:
        target = args.server or stack.enter_context(server_process(args.model))
        settings = None if args.server else load_settings(model_id=args.model).model_dump(mode="json")
        yield target, {"server": {"target": target, "started_here": not args.server, "settings": settings,
                                  **describe_server(target)}}


@contextlib.contextmanager
def _progress(desc: str, unit: str, scale: float = 1.0) -> Iterator[Any]:
    from tqdm import tqdm

    with tqdm(desc=desc, unit=unit, unit_scale=scale if scale != 1.0 else False, file=sys.stderr) as bar:
        yield bar


def _print_and_save(args: argparse.Namespace, title: str, report: Any, mode: str, context: dict[str, Any]) -> None:
    from parakeet_serve.bench.report import write_json

    print(title)
    print(report.table())
    if args.json:
        write_json(args.json, mode, context, report)
        print(f"wrote {args.json}")


@contextlib.contextmanager
def server_process(model: str, timeout_s: float = 300.0) -> Iterator[str]:
    """A `parakeet-serve serve` subprocess on a free loopback port (settings from the environment)."""
    import subprocess

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from parakeet_serve.net import free_port

    port = free_port()
    command = [sys.executable, "-m", "parakeet_serve", "serve", "--model", model, "--host", "127.0.0.1",
               "--port", str(port), "--metrics-port", "0", "--log-level", "WARNING"]
    process = subprocess.Popen(command)
    target = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + timeout_s
            while True:
                if process.poll() is not None:
                    raise ParakeetError(f"the server for {model} exited with code {process.returncode}")
                with contextlib.suppress(grpc.RpcError):
                    if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                        break
                if time.monotonic() > deadline:
                    raise ParakeetError(f"the server for {model} was not ready within {timeout_s:g} s")
                time.sleep(0.5)
        yield target
    finally:
        process.terminate()
        process.wait(60)


def _run_transcribe(args: argparse.Namespace) -> None:
    from parakeet_serve.client import (
        ClientOptions,
        connect,
        recognize_file,
        response_lines,
        rpc_error_text,
        served_model,
        transcript_of,
    )
    from parakeet_serve.warmup import expected_text, judge, sample_path

    path = args.file or sample_path()
    if not path.is_file():
        raise SystemExit(f"parakeet-serve: no such file: {path}")
    try:
        options = ClientOptions(
            server=args.server, tls=args.tls, ca=args.ca, cert=args.cert, key=args.key, token=args.token,
            language_code=args.language_code, punctuation=not args.no_punctuation, word_times=args.words,
            max_alternatives=args.alternatives, encoding=args.encoding or ("pcm" if args.rate else ""),
            sample_rate=args.rate, channels=args.channels,
        )
    except ValueError as exc:
        raise SystemExit(f"parakeet-serve: {exc}") from None
    try:
        asr = connect(options)
        model = served_model(asr) if args.check else ""
        response = recognize_file(path, options, asr)
    except Exception as exc:  # grpc.RpcError carries the server's one sentence
        raise SystemExit(f"parakeet-serve: {rpc_error_text(exc)}") from None
    print("\n".join(response_lines(response)))
    if args.check:
        failure = judge(transcript_of(response), expected_text(model) if args.file is None else None)
        if failure:
            raise SystemExit(f"parakeet-serve: check failed: {failure}")
        print(f"check passed: {args.server} is SERVING {model}")
