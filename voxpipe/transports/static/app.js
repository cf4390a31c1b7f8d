// voxpipe's browser client: no build step, no dependencies.
//
// WebSocket calls (any deployment): the microphone is captured by an AudioWorklet at 16 kHz and streamed
// as Media Streams events (start / media / mark / stop, PCM16 payloads) over WS {name}/ws; the bot's audio
// is played by a second worklet that echoes each mark once the audio before it has played, and drops its
// queue on "clear" (barge-in). The server also sends "transcript" and "latency" events to show, and
// "failure" when the call cannot go on: its text is shown and spoken with the browser's own voice (the Web
// Speech API), since the deployment's TTS may be what failed.
//
// WebRTC calls (realtime deployments on OpenAI): POST {name}/session (with the session token) returns a
// short-lived client secret and a tools token; the page talks to OpenAI Realtime directly, and the agent's
// tools run on the server (POST {name}/tools/X).

const base = new URL(".", location.href);
const titleEl = document.getElementById("title");
const statusEl = document.getElementById("status");
const transcriptEl = document.getElementById("transcript");
const button = document.getElementById("call");
const FRAME_SAMPLES = 320; // 20 ms at 16 kHz
let config = null;
let hangUp = null;
let pendingLatency = null;

function setStatus(text) {
  statusEl.textContent = text;
}

// A call needs a session token first (POST {name}/token): it names the session the server chose for this tab
// and this page's origin, and opens calls for a few minutes. The tab keeps it, so a reload within its
// lifetime resumes the conversation.
const tokenKey = `voxpipe-session-${location.pathname}`;

async function sessionToken() {
  const kept = JSON.parse(sessionStorage.getItem(tokenKey) || "null");
  if (kept && kept.expires_at * 1000 - Date.now() > 30000) return kept.token;
  const response = await fetch(new URL("token", base), { method: "POST" });
  if (!response.ok) throw new Error(`token: HTTP ${response.status}`);
  const issued = await response.json();
  sessionStorage.setItem(tokenKey, JSON.stringify(issued));
  return issued.token;
}

function addLine(role, text) {
  const item = document.createElement("li");
  item.className = role;
  item.textContent = text;
  if (role === "assistant" && pendingLatency !== null) {
    const latency = document.createElement("span");
    latency.className = "latency";
    latency.textContent = ` (${pendingLatency} ms)`;
    item.append(latency);
    pendingLatency = null;
  }
  transcriptEl.append(item);
}

function toBase64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]);
  return btoa(binary);
}

function pcm16ToFloat(payload) {
  const binary = atob(payload);
  const samples = new Float32Array(binary.length / 2);
  for (let i = 0; i < samples.length; i++) {
    const value = binary.charCodeAt(2 * i) | (binary.charCodeAt(2 * i + 1) << 8);
    samples[i] = (value >= 0x8000 ? value - 0x10000 : value) / 32768;
  }
  return samples;
}

async function microphone() {
  return navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  });
}

async function startWebSocketCall() {
  const context = new AudioContext({ sampleRate: config.sample_rate });
  await context.audioWorklet.addModule(new URL("static/audio-worklet.js", base));
  const stream = await microphone();
  const capture = new AudioWorkletNode(context, "capture");
  const playback = new AudioWorkletNode(context, "playback", { numberOfInputs: 0, outputChannelCount: [1] });
  context.createMediaStreamSource(stream).connect(capture);
  capture.connect(context.destination); // keeps the capture node pulled; it outputs silence
  playback.connect(context.destination);

  const url = new URL("ws", base);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  // A browser cannot set headers on a WebSocket: the token travels as a subprotocol (not in the URL, which
  // access logs keep).
  const socket = new WebSocket(url, ["voxpipe", `token.${await sessionToken()}`]);
  const send = (event) => socket.readyState === WebSocket.OPEN && socket.send(JSON.stringify(event));
  const frame = new Int16Array(FRAME_SAMPLES);
  let filled = 0;

  socket.onopen = () => {
    send({ event: "start", start: { sampleRate: config.sample_rate } });
    setStatus("Connected: speak any time.");
  };
  capture.port.onmessage = ({ data }) => {
    for (let i = 0; i < data.length; i++) {
      frame[filled++] = Math.max(-32768, Math.min(32767, Math.round(data[i] * 32767)));
      if (filled === FRAME_SAMPLES) {
        send({ event: "media", media: { payload: toBase64(new Uint8Array(frame.buffer)) } });
        filled = 0;
      }
    }
  };
  playback.port.onmessage = ({ data }) => {
    for (const name of data.played) send({ event: "mark", mark: { name } });
  };
  socket.onmessage = ({ data }) => {
    const event = JSON.parse(data);
    if (event.event === "media") {
      const samples = pcm16ToFloat(event.media.payload);
      playback.port.postMessage({ type: "audio", samples }, [samples.buffer]);
    } else if (event.event === "mark") {
      playback.port.postMessage({ type: "mark", name: event.mark.name });
    } else if (event.event === "clear") {
      playback.port.postMessage({ type: "clear" });
    } else if (event.event === "transcript") {
      addLine(event.role, event.text);
    } else if (event.event === "latency") {
      pendingLatency = event.ms;
    } else if (event.event === "end") {
      setStatus(event.to ? `Transferred to ${event.to}.` : "The agent ended the call.");
    } else if (event.event === "failure") {
      addLine("assistant", event.say);
      if ("speechSynthesis" in window) speechSynthesis.speak(new SpeechSynthesisUtterance(event.say));
      setStatus(event.to ? `The call could not go on; transferring to ${event.to}.` : "The call could not go on.");
    }
  };
  socket.onclose = ({ code, reason }) => {
    if (code === 1008) sessionStorage.removeItem(tokenKey); // refused (expired, server restarted...): a new one next time
    setStatus(code === 1008 || code === 1013 ? `Call refused: ${reason}` : "Call ended.");
    stop();
  };

  function stop() {
    send({ event: "stop" });
    socket.close();
    stream.getTracks().forEach((track) => track.stop());
    context.close();
    button.textContent = "Start call";
    hangUp = null;
  }
  return stop;
}

async function startWebRtcCall() {
  const response = await fetch(new URL("session", base), {
    method: "POST",
    headers: { Authorization: `Bearer ${await sessionToken()}` },
  });
  if (response.status === 401) sessionStorage.removeItem(tokenKey);
  if (!response.ok) throw new Error(`session: HTTP ${response.status}`);
  const session = await response.json();
  const peer = new RTCPeerConnection();
  const speaker = new Audio();
  speaker.autoplay = true;
  peer.ontrack = (event) => (speaker.srcObject = event.streams[0]);
  const stream = await microphone();
  peer.addTrack(stream.getTracks()[0], stream);
  const channel = peer.createDataChannel("oai-events");
  const send = (event) => channel.readyState === "open" && channel.send(JSON.stringify(event));
  let speechStoppedAt = null;
  let endAfterResponse = false;

  async function runTool(event) {
    const result = await fetch(new URL(`tools/${encodeURIComponent(event.name)}`, base), {
      method: "POST",
      headers: { Authorization: `Bearer ${session.tools_token}`, "Content-Type": "application/json" },
      body: event.arguments || "{}",
    }).then((r) => r.json());
    endAfterResponse = endAfterResponse || result.effect === "end_call" || result.effect === "transfer";
    send({
      type: "conversation.item.create",
      item: { type: "function_call_output", call_id: event.call_id, output: JSON.stringify(result.result) },
    });
    send({ type: "response.create" });
  }

  channel.onmessage = ({ data }) => {
    const event = JSON.parse(data);
    if (event.type === "input_audio_buffer.speech_stopped") speechStoppedAt = performance.now();
    else if (event.type === "output_audio_buffer.started" && speechStoppedAt !== null) {
      pendingLatency = Math.round(performance.now() - speechStoppedAt);
      speechStoppedAt = null;
    } else if (event.type === "conversation.item.input_audio_transcription.completed") addLine("user", event.transcript);
    else if (event.type === "response.output_audio_transcript.done") addLine("assistant", event.transcript);
    else if (event.type === "response.function_call_arguments.done") runTool(event);
    else if (event.type === "response.done" && endAfterResponse && event.response.output.every((o) => o.type !== "function_call"))
      setTimeout(() => hangUp && hangUp(), 1500);
  };

  const offer = await peer.createOffer();
  await peer.setLocalDescription(offer);
  const answer = await fetch(`https://api.openai.com/v1/realtime/calls?model=${encodeURIComponent(session.model)}`, {
    method: "POST",
    body: offer.sdp,
    headers: { Authorization: `Bearer ${session.client_secret.value}`, "Content-Type": "application/sdp" },
  });
  await peer.setRemoteDescription({ type: "answer", sdp: await answer.text() });
  setStatus("Connected over WebRTC: speak any time.");

  return () => {
    peer.close();
    stream.getTracks().forEach((track) => track.stop());
    setStatus("Call ended.");
    button.textContent = "Start call";
    hangUp = null;
  };
}

button.addEventListener("click", async () => {
  if (hangUp) {
    hangUp();
    return;
  }
  button.textContent = "Hang up";
  setStatus("Connecting…");
  try {
    hangUp = config.webrtc ? await startWebRtcCall() : await startWebSocketCall();
  } catch (error) {
    setStatus(`Could not start the call: ${error.message}`);
    button.textContent = "Start call";
  }
});

config = await fetch(new URL("config", base)).then((r) => r.json());
titleEl.textContent = config.name;
document.title = `${config.name} · voxpipe`;
