// The 3D stage both viewers draw on: a WebGL renderer on the canvas, lights, a floor grid, an orbiting
// camera, and resizing with the canvas's box. Returns null where the browser has no WebGL.
import * as THREE from './three.module.min.js';
import { OrbitControls } from './OrbitControls.js';

export function makeStage(canvas, { position = [0, 1.2, 4.5], target = [0, 1.0, 0], onChange } = {}) {
  let renderer;
  try {
    renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
  } catch (e) {
    return null;
  }
  renderer.setPixelRatio(window.devicePixelRatio);
  const scene = new THREE.Scene();
  scene.background = new THREE.Color(0xeef0f4);
  scene.add(new THREE.HemisphereLight(0xffffff, 0x8d8d8d, 2.0));
  const sun = new THREE.DirectionalLight(0xffffff, 2.0);
  sun.position.set(1, 3, 4);
  scene.add(sun);
  scene.add(new THREE.GridHelper(8, 16, 0xb0b4bc, 0xd0d4dc));
  const camera = new THREE.PerspectiveCamera(30, 1, 0.05, 100);
  camera.position.set(...position);
  const controls = new OrbitControls(camera, canvas);
  controls.target.set(...target);
  controls.update();
  const stage = {
    renderer, scene, camera, controls,
    draw() { renderer.render(scene, camera); },
    resize() {
      const { clientWidth: w, clientHeight: h } = canvas.parentElement;
      if (!w || !h) return;
      renderer.setSize(w, h, false);
      camera.aspect = w / h;
      camera.updateProjectionMatrix();
      (onChange || stage.draw)();
    },
  };
  controls.addEventListener('change', () => (onChange || stage.draw)());
  new ResizeObserver(() => stage.resize()).observe(canvas.parentElement);
  stage.resize();
  return stage;
}
