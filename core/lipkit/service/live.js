// lipkit live: the microphone to the server over WebRTC, the avatar's video and voice back.
// window.lipkitLive exposes the page's state for tests and scripts (see the fields below).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const video = $("video");
  const query = new URLSearchParams(window.location.search);
  if (query.get("key")) $("key").value = query.get("key");

  const live = {
    status: "idle", // idle, starting, connecting, connected, stopped, failed
    error: null, // {type, message, hint} of the last failure
    framesShown: 0, // video frames presented (requestVideoFrameCallback)
    startedAt: null, // performance.now() when Start was pressed
    firstFrameAt: null, // performance.now() of the first frame shown
    info: null, // the server's LiveInfo
    stats: null, // the server's LiveStats, polled once a second
    probe: null, // {rect: [x, y, w, h], samples: [{t, mean: [r, g, b]}]} (watch())
    // mean [r, g, b] of a rectangle of the frame shown now (video pixels)
    meanRect(x, y, w, h) {
      const canvas = live._canvas || (live._canvas = document.createElement("canvas"));
      canvas.width = w;
      canvas.height = h;
      const ctx = canvas.getContext("2d", { willReadFrequently: true });
      ctx.drawImage(video, x, y, w, h, 0, 0, w, h);
      const data = ctx.getImageData(0, 0, w, h).data;
      const sum = [0, 0, 0];
      for (let i = 0; i < data.length; i += 4) {
        sum[0] += data[i];
        sum[1] += data[i + 1];
        sum[2] += data[i + 2];
      }
      const n = data.length / 4;
      return sum.map((s) => s / n);
    },
    // record meanRect of every frame shown from now on, with its time since Start (ms)
    watch(x, y, w, h) {
      live.probe = { rect: [x, y, w, h], samples: [] };
    },
    frameSize() {
      return [video.videoWidth, video.videoHeight];
    },
    tracks: [], // the tracks received: [{kind, streams: [stream ids]}]
    // the received track's inbound-rtp figures ("video": framesDecoded, framesPerSecond, ...;
    // "audio": totalSamplesReceived, totalAudioEnergy, audioLevel, ...)
    async inbound(kind) {
      if (!live._pc) return null;
      const report = await live._pc.getStats();
      let found = null;
      report.forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === kind) found = s;
      });
      return found && JSON.parse(JSON.stringify(found));
    },
    _pc: null,
    _connected: false,
    _mic: null,
    _poll: null,
  };
  window.lipkitLive = live;

  function show(text, isError) {
    const el = $("status");
    el.textContent = text;
    el.className = isError ? "error" : "";
  }

  function fail(error) {
    live.error = error;
    live.status = "failed";
    show(error.message + (error.hint ? " (" + error.hint + ")" : ""), true);
    stop(false);
  }

  function headers(extra) {
    const key = $("key").value;
    return Object.assign(key ? { "X-API-Key": key } : {}, extra || {});
  }

  async function errorOf(response) {
    try {
      const body = await response.json();
      if (body && body.detail && body.detail.message) return body.detail;
    } catch (e) {
      // not JSON
    }
    return { type: "HTTPError", message: "the server answered " + response.status, hint: null };
  }

  function onFrame(now, meta) {
    live.framesShown += 1;
    if (live.firstFrameAt === null) live.firstFrameAt = now;
    if (live.probe) {
      const [x, y, w, h] = live.probe.rect;
      live.probe.samples.push({ t: now - live.startedAt, frames: meta.presentedFrames,
                                mean: live.meanRect(x, y, w, h) });
    }
    if (live._pc) video.requestVideoFrameCallback(onFrame);
  }

  function gathered(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        if (pc.iceGatheringState === "complete") resolve();
      };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 3000); // whatever candidates there are by then
    });
  }

  let shownBefore = [0, 0];
  async function poll() {
    const response = await fetch("/live/stats", { headers: headers() }).catch(() => null);
    if (!response || !response.ok) return;
    const body = await response.json();
    live.info = body.info;
    live.stats = body.stats;
    const s = body.stats || {};
    const cell = (id, value) => ($(id).textContent = value === null || value === undefined ? "-" : value);
    cell("c-avatar", body.info.avatar);
    cell("c-backend", body.info.backend + " on " + body.info.device);
    cell("c-frames", s.frames);
    cell("c-fps", s.fps === undefined ? null : s.fps.toFixed(1));
    cell("c-generated", s.generated);
    cell("c-dropped", s.dropped);
    cell("c-late", s.late);
    cell("c-latency", s.latency_ms_p95);
    const now = performance.now();
    const rate = (1000 * (live.framesShown - shownBefore[1])) / (now - shownBefore[0]);
    if (shownBefore[0]) cell("c-shown", rate.toFixed(1));
    shownBefore = [now, live.framesShown];
  }

  async function connect() {
    const mic = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      video: false,
    });
    live._mic = mic;
    const pc = new RTCPeerConnection({ iceServers: [] });
    live._pc = pc;
    mic.getAudioTracks().forEach((track) => pc.addTrack(track, mic));
    pc.addTransceiver("video", { direction: "recvonly" });
    const own = new MediaStream();
    pc.ontrack = (event) => {
      live.tracks.push({ kind: event.track.kind, streams: event.streams.map((m) => m.id) });
      if (event.streams && event.streams[0]) {
        if (video.srcObject !== event.streams[0]) video.srcObject = event.streams[0];
      } else {
        own.addTrack(event.track);
        video.srcObject = own;
      }
    };
    pc.onconnectionstatechange = () => {
      if (pc !== live._pc) return;
      const state = pc.connectionState;
      live.status = state;
      if (state === "connected") {
        live._connected = true;
        show("Connected: speak.", false);
      } else if (live._connected && (state === "failed" || state === "closed")) {
        fail({ type: "ConnectionClosed", message: "the server ended the stream",
               hint: "another client took it over, or the server stopped; press Start again" });
      } else if (state === "failed") {
        fail({ type: "ConnectionError", message: "the WebRTC connection failed",
               hint: "the browser and the server must reach each other directly (same machine or LAN)" });
      }
    };
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    live.status = "connecting";
    const response = await fetch("/live/offer", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }),
    });
    if (!response.ok) throw await errorOf(response);
    await pc.setRemoteDescription(await response.json());
    video.requestVideoFrameCallback(onFrame);
  }

  async function start() {
    $("start").disabled = true;
    $("stop").disabled = false;
    live.status = "starting";
    live.error = null;
    live.framesShown = 0;
    live.firstFrameAt = null;
    live.tracks = [];
    live._connected = false;
    live.startedAt = performance.now();
    show("Connecting...", false);
    try {
      await connect();
      live._poll = setInterval(poll, 1000);
      poll();
    } catch (error) {
      if (error && error.message && error.type !== undefined && !(error instanceof Error)) {
        fail(error);
      } else {
        const name = error && error.name ? error.name + ": " : "";
        fail({ type: "BrowserError", message: name + (error && error.message ? error.message : String(error)),
               hint: "allow the microphone, and use http://127.0.0.1 or https (a secure origin)" });
      }
    }
  }

  function stop(byUser) {
    if (live._poll) clearInterval(live._poll);
    live._poll = null;
    if (live._pc) live._pc.close();
    live._pc = null;
    if (live._mic) live._mic.getTracks().forEach((track) => track.stop());
    live._mic = null;
    $("start").disabled = false;
    $("stop").disabled = true;
    if (byUser) {
      live.status = "stopped";
      show("Stopped.", false);
    }
  }

  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", () => stop(true));
  $("sound").addEventListener("change", () => {
    video.muted = !$("sound").checked;
    if (!video.muted) video.play().catch(() => {});
  });
  window.addEventListener("pagehide", () => stop(false));
})();
