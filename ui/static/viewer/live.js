// EMAGE Studio's Live tab: the microphone's speech goes to the server in 200 ms chunks (float32 at the device's
// rate over the WebSocket /live/ws, see emage_core/serve/live_web.py; the server resamples); the motion comes back chunk by chunk and poses
// the skinned body (/live/body.glb) as it arrives. Stop: the take (speech + the motion shown) downloads.
//
//   const live = mount(element, {models: [[label, ref], ...]});
//
// For tests: canvas.dataset.state (idle | connecting | live | finishing | done | busy | error),
// .received (motion frames received), .shown (frames drawn), .sent (speech chunks sent); window.emageLiveStats.
import { GLTFLoader } from './GLTFLoader.js';
import { makeStage } from './stage.js';

const CHUNK_S = 0.2; // seconds of speech per message
const FPS = 30;
const JITTER_FRAMES = 3; // frames kept in hand before playing, so bursts of 6 play evenly

function base() {
  return ((window.gradio_config && window.gradio_config.root) || window.location.href.split('?')[0]).replace(/\/$/, '');
}

class Live {
  constructor(element, options) {
    const models = (options && options.models) || [['EMAGE', 'emage']];
    element.innerHTML = `
      <div class="emage-live-controls">
        <button class="emage-live-start lg primary">Start</button>
        <button class="emage-live-stop lg secondary" disabled>Stop</button>
        <label>Model <select class="emage-live-model">${models.map(([l, r]) => `<option value="${r}">${l}</option>`).join('')}</select></label>
        <label title="0 = the model's most likely motion; above 0 it samples, and the seed picks the sample">Variation
          <input class="emage-live-temperature" type="number" value="0" min="0" max="2" step="0.1" style="width:5em"></label>
        <label>Seed <input class="emage-live-seed" type="number" value="0" min="0" step="1" style="width:6em"></label>
        <span class="emage-live-status">Press Start and speak.</span>
      </div>
      <div class="emage-viewer-stage"><canvas></canvas></div>
      <div class="emage-live-take"></div>`;
    this.$ = (s) => element.querySelector(s);
    this.canvas = this.$('canvas');
    this.status = this.$('.emage-live-status');
    this.takeBox = this.$('.emage-live-take');
    this.startButton = this.$('.emage-live-start');
    this.stopButton = this.$('.emage-live-stop');
    this.startButton.addEventListener('click', () => this.start());
    this.stopButton.addEventListener('click', () => this.stop());
    this.queue = [];
    this.stats = { latencies: [], received: 0, shown: 0, sent: 0 };
    window.emageLiveStats = this.stats;
    this.setState('idle');
    this.bones = null;
    this.stage = makeStage(this.canvas, { position: [0, 1.0, 4.0], target: [0, 0.9, 0] });
    if (!this.stage) {
      this.renderer = null;
      this.status.textContent = 'Live mode shows the body with WebGL, which this browser does not offer.';
      return;
    }
    ({ renderer: this.renderer, scene: this.scene, camera: this.camera } = this.stage);
    this.bodyReady = new GLTFLoader().loadAsync(`${base()}/live/body.glb`).then((gltf) => {
      this.scene.add(gltf.scene);
      gltf.scene.traverse((o) => { if (o.isSkinnedMesh && !this.bones) this.bones = o.skeleton.bones; });
      this.draw();
    });
    this.loop();
  }

  setState(state) {
    this.state = state;
    this.canvas.dataset.state = state;
  }

  async start() {
    if (!['idle', 'done', 'busy', 'error'].includes(this.state)) return; // one session at a time
    this.setState('connecting');
    this.startButton.disabled = true;
    this.stopButton.disabled = false;
    this.takeBox.innerHTML = '';
    this.queue = [];
    Object.assign(this.stats, { latencies: [], received: 0, shown: 0, sent: 0 });
    // created in the click (browsers let such a context run), at the device's own rate: the server resamples
    this.audio = new AudioContext();
    this.audio.resume();
    this.status.textContent = 'Asking for the microphone...';
    try {
      this.media = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
      if (this.state !== 'connecting') throw new Error('stopped');
      this.capture();
    } catch (e) {
      this.endAudio();
      if (this.state === 'connecting') {
        this.setState('error');
        this.status.textContent = `No microphone: ${e.message}`;
      }
      this.startButton.disabled = false;
      this.stopButton.disabled = true;
      return;
    }
    const ws = new WebSocket(base().replace(/^http/, 'ws') + '/live/ws');
    this.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({
      type: 'start', model: this.$('.emage-live-model').value, seed: Number(this.$('.emage-live-seed').value),
      temperature: Number(this.$('.emage-live-temperature').value), sample_rate: this.audio.sampleRate,
    }));
    ws.onmessage = (event) => { if (this.ws === ws) this.onMessage(JSON.parse(event.data)); };
    ws.onclose = () => { if (this.ws === ws) this.closed(); };
    this.status.textContent = 'Connecting...';
  }

  // The microphone's samples, sent in 200 ms chunks once the session is live (nothing is played back).
  capture() {
    const chunk = Math.round(CHUNK_S * this.audio.sampleRate);
    const source = this.audio.createMediaStreamSource(this.media);
    const node = this.audio.createScriptProcessor(2048, 1, 1);
    let pending = new Float32Array(0);
    node.onaudioprocess = (e) => {
      if (this.state !== 'live' || !this.ws || this.ws.readyState !== WebSocket.OPEN) return;
      const input = e.inputBuffer.getChannelData(0);
      const joined = new Float32Array(pending.length + input.length);
      joined.set(pending);
      joined.set(input, pending.length);
      let i = 0;
      for (; i + chunk <= joined.length; i += chunk) {
        this.ws.send(joined.slice(i, i + chunk).buffer);
        this.stats.sent += 1;
        this.canvas.dataset.sent = String(this.stats.sent);
      }
      pending = joined.slice(i);
    };
    const mute = this.audio.createGain();
    mute.gain.value = 0; // processing needs a path to the speakers; nothing is heard
    source.connect(node).connect(mute).connect(this.audio.destination);
    this.audioNode = node;
  }

  onMessage(msg) {
    if (msg.type === 'ready') {
      this.setState('live');
      this.status.textContent = `Live (${msg.model}, seed ${msg.seed}): speak. The motion trails the speech by `
        + `${Math.round((1000 * msg.lookahead_frames) / msg.fps)} ms of look-ahead plus processing.`;
    } else if (msg.type === 'motion') {
      this.stats.latencies.push(Date.now() / 1000 - msg.received);
      for (let k = 0; k < msg.n; k++) {
        this.queue.push({ q: msg.q.slice(k * 220, (k + 1) * 220), root: msg.root.slice(k * 3, (k + 1) * 3) });
      }
      this.stats.received += msg.n;
      this.canvas.dataset.received = String(this.stats.received);
    } else if (msg.type === 'take') {
      this.setState('done');
      this.status.textContent = `Take: ${msg.seconds.toFixed(2)} s of speech, ${msg.frames} frames. Downloads:`;
      this.takeBox.innerHTML = msg.files.map((f) => `<a href="${base()}/${f.url}" download="${f.name}">${f.name}</a>`).join(' · ');
    } else {
      this.setState(msg.type === 'busy' ? 'busy' : 'error');
      this.status.textContent = msg.message;
    }
  }

  stop() {
    this.stopButton.disabled = true;
    if (!this.ws) { // still asking for the microphone: start() notices and cleans up
      if (this.state === 'connecting') {
        this.setState('idle');
        this.status.textContent = 'Stopped.';
      }
      return;
    }
    if (this.state === 'live') {
      this.setState('finishing');
      this.status.textContent = 'Finishing the take...';
      this.ws.send(JSON.stringify({ type: 'stop' }));
    } else {
      this.ws.close();
    }
    this.endAudio();
  }

  endAudio() {
    if (this.audioNode) this.audioNode.onaudioprocess = null;
    if (this.audio) this.audio.close();
    if (this.media) this.media.getTracks().forEach((t) => t.stop());
    this.audio = this.audioNode = this.media = null;
  }

  closed() {
    this.endAudio();
    this.ws = null;
    if (this.state === 'live' || this.state === 'finishing' || this.state === 'connecting') {
      this.setState('error');
      this.status.textContent = 'The connection ended.';
    }
    this.startButton.disabled = false;
    this.stopButton.disabled = true;
  }

  // Play the received frames at 30 fps, a few frames behind the newest (bursts of a chunk play evenly).
  loop() {
    const now = performance.now();
    if (this.queue.length > JITTER_FRAMES || (this.queue.length && this.state !== 'live')) {
      this.clock = this.clock === undefined ? now : this.clock;
      while (this.queue.length && now >= this.clock) {
        const frame = this.queue.shift();
        this.pose(frame);
        this.clock += 1000 / FPS;
        if (this.queue.length > 4 * JITTER_FRAMES) this.queue.splice(0, this.queue.length - JITTER_FRAMES); // caught up
      }
    } else {
      this.clock = undefined;
    }
    this.draw();
    requestAnimationFrame(() => this.loop());
  }

  pose(frame) {
    this.stats.shown += 1;
    this.canvas.dataset.shown = String(this.stats.shown);
    if (!this.bones) return;
    for (let j = 0; j < this.bones.length && j < 55; j++) {
      this.bones[j].quaternion.set(frame.q[4 * j], frame.q[4 * j + 1], frame.q[4 * j + 2], frame.q[4 * j + 3]);
    }
    this.bones[0].position.set(frame.root[0], frame.root[1], frame.root[2]);
    this.canvas.dataset.jaw = String(2 * Math.acos(Math.min(1, Math.abs(frame.q[4 * 22 + 3]))));
  }

  draw() {
    if (this.renderer) this.renderer.render(this.scene, this.camera);
  }
}

export function mount(element, options) {
  return new Live(element, options);
}
