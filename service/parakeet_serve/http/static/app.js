// The page: microphone -> realtime WebSocket (24 kHz PCM16, server VAD), and file upload -> transcription.
"use strict";
const RATE = 24000;
const $ = (id) => document.getElementById(id);
let socket = null, context = null, stream = null, source = null, node = null;
let settled = null;  // resolves when the server answers a commit: its transcript, or an error

fetch("/v1/models").then((r) => r.json()).then((m) => { $("model").textContent = `Model: ${m.data[0].id}`; })
  .catch(() => { $("model").textContent = "Model: unavailable"; });

function toPcm16Base64(samples, fromRate) {
  // Linear-interpolation resampling to 24 kHz, then 16-bit little-endian PCM, base64.
  const length = Math.floor(samples.length * RATE / fromRate);
  const pcm = new Int16Array(length);
  for (let i = 0; i < length; i++) {
    const x = i * fromRate / RATE, j = Math.floor(x), f = x - j;
    const v = (samples[j] || 0) * (1 - f) + (samples[j + 1] || samples[j] || 0) * f;
    pcm[i] = Math.max(-32768, Math.min(32767, Math.round(v * 32767)));
  }
  let binary = "";
  const bytes = new Uint8Array(pcm.buffer);
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

function onEvent(event) {
  if (event.type === "conversation.item.input_audio_transcription.delta") {
    $("interim").textContent += event.delta;
  } else if (event.type === "conversation.item.input_audio_transcription.completed") {
    $("interim").textContent = "";
    $("finals").textContent = `${$("finals").textContent} ${event.transcript}`.trim();
    if (settled) settled();
  } else if (event.type === "error") {
    $("mic-status").textContent = `Error: ${event.error.message}`;
    if (settled) settled();
  }
}

async function start() {
  $("start").disabled = true;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/v1/realtime?intent=transcription`);
  socket.onmessage = (message) => onEvent(JSON.parse(message.data));
  socket.onclose = () => { $("mic-status").textContent = "Disconnected."; };
  await new Promise((resolve, reject) => { socket.onopen = resolve; socket.onerror = reject; });
  socket.send(JSON.stringify({ type: "session.update", session: { type: "transcription", audio: { input: {
    format: { type: "audio/pcm", rate: RATE }, turn_detection: { type: "server_vad", silence_duration_ms: 600 } } } } }));
  stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
  context = new AudioContext();
  await context.audioWorklet.addModule("/static/capture-worklet.js");
  source = context.createMediaStreamSource(stream);
  node = new AudioWorkletNode(context, "capture");
  let pending = [], pendingLength = 0;
  node.port.onmessage = (message) => {
    pending.push(message.data); pendingLength += message.data.length;
    if (pendingLength < context.sampleRate / 10) return;  // send about 100 ms at a time
    const block = new Float32Array(pendingLength);
    let offset = 0;
    for (const part of pending) { block.set(part, offset); offset += part.length; }
    pending = []; pendingLength = 0;
    if (socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ type: "input_audio_buffer.append", audio: toPcm16Base64(block, context.sampleRate) }));
    }
  };
  source.connect(node);
  $("mic-status").textContent = "Listening…";
  $("stop").disabled = false;
}

async function stop() {
  $("stop").disabled = true;
  if (node) node.disconnect();
  if (stream) stream.getTracks().forEach((t) => t.stop());
  if (context) context.close();
  if (socket && socket.readyState === WebSocket.OPEN && $("interim").textContent) {
    // An utterance is under way: commit it and wait for its transcript (at most 10 s) before closing.
    $("mic-status").textContent = "Finishing the last words…";
    const answered = new Promise((resolve) => { settled = resolve; });
    socket.send(JSON.stringify({ type: "input_audio_buffer.commit" }));
    await Promise.race([answered, new Promise((resolve) => setTimeout(resolve, 10000))]);
    settled = null;
  }
  if (socket) { socket.onclose = null; socket.close(); }  // closed on purpose: not "Disconnected."
  $("start").disabled = false;
  $("mic-status").textContent = "Stopped.";
}

$("start").addEventListener("click", () => start().catch((e) => { $("mic-status").textContent = `Error: ${e.message}`; stop(); }));
$("stop").addEventListener("click", () => { stop(); });

$("upload").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData();
  form.append("file", $("file").files[0]);
  form.append("response_format", "verbose_json");
  form.append("timestamp_granularities[]", "word");
  $("file-text").textContent = "Transcribing…";
  const response = await fetch("/v1/audio/transcriptions", { method: "POST", body: form });
  const body = await response.json();
  if (!response.ok) { $("file-text").textContent = `Error: ${body.error.message}`; return; }
  $("file-text").textContent = body.text;
  $("words").textContent = (body.words || []).map((w) => `${w.word} ${w.start.toFixed(2)}–${w.end.toFixed(2)}s`).join(" · ");
});
