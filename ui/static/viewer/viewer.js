// EMAGE Studio's 3D viewer: a result's animated .glb bodies side by side on one canvas, all driven by
// the speech's <audio> element (play, pause and scrub move every body in lockstep), orbit/zoom camera.
// Vendored three.js r170 (MIT, LICENSE.three); nothing is fetched from outside the app.
//
//   const viewer = mount(element);   // builds the canvas and the audio player inside element
//   viewer.show([speech, ...glbs]);  // Gradio FileData objects (or URLs): the speech first, then 1-4 .glb
//
// For tests: canvas.dataset.time is the animation time last drawn (seconds, = the audio's time),
// canvas.dataset.bodies the bodies shown, canvas.dataset.results the results shown so far, canvas.dataset.frames
// the frames drawn.
import * as THREE from './three.module.min.js';
import { GLTFLoader } from './GLTFLoader.js';
import { makeStage } from './stage.js';

const SPACING = 1.0; // metres between neighbouring bodies

class Viewer {
  constructor(element) {
    element.innerHTML = `
      <div class="emage-viewer-stage"><canvas></canvas>
        <p class="emage-viewer-note">The motion plays here on the body as soon as it exists, before the videos.</p>
      </div>
      <audio controls preload="auto"></audio>`;
    this.canvas = element.querySelector('canvas');
    this.note = element.querySelector('.emage-viewer-note');
    this.audio = element.querySelector('audio');
    this.bodies = []; // {root, mixer, duration}
    this.loading = 0;
    this.frames = 0;
    this.stage = makeStage(this.canvas, { onChange: () => this.draw() });
    if (!this.stage) {
      this.renderer = null;
      this.canvas.hidden = true;
      this.note.textContent = 'The 3D viewer needs WebGL, which this browser does not offer: the videos below show '
        + 'the result. The speech plays here.';
      return;
    }
    ({ renderer: this.renderer, scene: this.scene, camera: this.camera, controls: this.controls } = this.stage);
    this.loader = new GLTFLoader();
    for (const name of ['seeked', 'timeupdate', 'pause', 'loadedmetadata']) {
      this.audio.addEventListener(name, () => this.draw());
    }
    this.audio.addEventListener('play', () => this.loop());
  }

  // The bodies of one result (FileData objects or URLs: the speech first, then the .glb files).
  async show(files) {
    const urls = files.map((f) => (typeof f === 'string' ? f : f.url));
    const names = files.map((f) => (typeof f === 'string' ? f : f.orig_name || f.url).split('/').pop());
    const [speech, ...glbs] = urls;
    const token = ++this.loading;
    this.audio.pause();
    this.audio.src = speech;
    if (!this.renderer) return;
    this.note.textContent = 'Loading the motion...';
    const loaded = await Promise.all(glbs.map((url) => this.loader.loadAsync(url)));
    if (token !== this.loading) return; // a newer result arrived meanwhile
    this.clear();
    loaded.forEach((gltf, i) => {
      const root = gltf.scene;
      root.position.x = (i - (loaded.length - 1) / 2) * SPACING;
      this.scene.add(root);
      const mixer = new THREE.AnimationMixer(root);
      const clip = gltf.animations[0];
      if (clip) mixer.clipAction(clip).play();
      this.bodies.push({ root, mixer, duration: clip ? clip.duration : 0 });
    });
    this.frame();
    this.note.textContent = glbs.length > 1 ? `Left to right: ${names.slice(1).map((n) => n.replace(/\.glb$/, '')).join(', ')}` : '';
    this.canvas.dataset.bodies = String(this.bodies.length);
    this.canvas.dataset.results = String(Number(this.canvas.dataset.results || 0) + 1);
    this.draw();
  }

  clear() {
    for (const { root, mixer } of this.bodies) {
      mixer.stopAllAction();
      this.scene.remove(root);
      root.traverse((o) => { o.geometry?.dispose(); o.material?.dispose?.(); });
    }
    this.bodies = [];
  }

  // Point the camera at the bodies (keeps the user's orbit angle, resets the distance).
  frame() {
    const box = new THREE.Box3();
    for (const { root } of this.bodies) box.expandByObject(root);
    if (box.isEmpty()) return;
    const size = box.getSize(new THREE.Vector3());
    const centre = box.getCenter(new THREE.Vector3());
    const fov = THREE.MathUtils.degToRad(this.camera.fov);
    const aspect = Math.max(this.camera.aspect, 0.1);
    const distance = 1.15 * Math.max(size.y / 2 / Math.tan(fov / 2), size.x / 2 / Math.tan(fov / 2) / aspect) + size.z;
    const direction = this.camera.position.clone().sub(this.controls.target).normalize();
    this.controls.target.copy(centre);
    this.camera.position.copy(centre).addScaledVector(direction, distance);
    this.controls.update();
  }

  // Pose every body at the audio's time and draw; clips end where the longest one does.
  draw() {
    if (!this.renderer) return;
    const t = this.audio.currentTime || 0;
    for (const { mixer, duration } of this.bodies) mixer.setTime(Math.min(t, Math.max(duration - 1e-3, 0)));
    this.renderer.render(this.scene, this.camera);
    if (this.bodies.length) this.canvas.dataset.time = String(this.bodies[0].mixer.time);
    this.canvas.dataset.frames = String(++this.frames);
  }

  loop() {
    this.draw();
    if (!this.audio.paused && !this.audio.ended) requestAnimationFrame(() => this.loop());
  }
}

export function mount(element) {
  return new Viewer(element);
}
