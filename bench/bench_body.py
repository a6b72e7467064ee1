"""Speed of the body, the skeleton and the stick preview, each figure beside its target.

    python bench/bench_body.py [--repeat 3]

- body load: reading the baked body file (target < 0.5 s), and the cached load beside it;
- posing: body vertices per frame for 200 random poses (target < 5 ms per frame);
- forward kinematics: 2000 frames, vectorised by tree level (target < 100 ms), beside a joint-by-joint
  reference loop over the same frames (the ratio is how much the level batching buys);
- stick preview: frames per second at 256x256 (target > 200 fps).

These were timed unit tests; a busy machine failed them for no fault of the code, so the figures live
here and the tests keep what they check about behaviour. Each figure is the best of ``--repeat`` runs.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from emage_core.body.anny import Body
from emage_core.motion.kinematics import BODY_ASSET, forward_kinematics, joint_positions, rest_skeleton
from emage_core.motion.clip import Motion
from emage_core.render.stick import StickRenderer
from emage_core.motion.rotation import axis_angle_to_matrix


def best_of(repeat: int, fn) -> float:
    """Shortest wall time of ``repeat`` calls of ``fn``, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def fk_loop(poses: np.ndarray, trans: np.ndarray, rest: np.ndarray, parents) -> np.ndarray:
    """Joint-by-joint forward kinematics (the textbook loop), the baseline for the vectorised one."""
    R = axis_angle_to_matrix(poses)  # (T, J, 3, 3)
    T, J = poses.shape[:2]
    world_R = np.empty_like(R)
    world_p = np.empty((T, J, 3), R.dtype)
    for j in range(J):
        p = parents[j]
        if p < 0:
            world_R[:, j], world_p[:, j] = R[:, j], rest[j] + trans
        else:
            world_R[:, j] = world_R[:, p] @ R[:, j]
            world_p[:, j] = world_p[:, p] + np.einsum("tij,j->ti", world_R[:, p], rest[j] - rest[p])
    return world_p


def row(name: str, value: float, unit: str, target: str, ok: bool, extra: str = "") -> None:
    print(f"{name:<34} {value:10.2f} {unit:<9} target {target:<12} {'met' if ok else 'NOT met'}  {extra}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(2)

    load = best_of(args.repeat, lambda: Body._from_npz(str(BODY_ASSET)))
    Body.load(BODY_ASSET)
    cached = best_of(args.repeat, lambda: Body.load(BODY_ASSET))
    row("body load (baked file)", load * 1e3, "ms", "< 500 ms", load < 0.5, f"cached load {cached * 1e6:.1f} us")

    body = Body.load()
    poses = rng.normal(0, 0.4, (200, 55, 3)).astype(np.float32)
    body.vertices(poses[:8], np.zeros((8, 3)))  # warm-up
    pose_s = best_of(args.repeat, lambda: body.vertices(poses, np.zeros((200, 3))))
    row("posing (200 frames)", pose_s / 200 * 1e3, "ms/frame", "< 5 ms", pose_s / 200 < 5e-3)

    rest, parents = rest_skeleton()
    p2k = rng.normal(0, 0.4, (2000, 55, 3)).astype(np.float32)
    t2k = rng.normal(0, 0.1, (2000, 3)).astype(np.float32)
    fk = best_of(args.repeat, lambda: forward_kinematics(p2k, t2k, rest, parents))
    loop = best_of(args.repeat, lambda: fk_loop(p2k, t2k, rest, parents))
    same = np.abs(fk_loop(p2k, t2k, rest, parents) - forward_kinematics(p2k, t2k, rest, parents)[0]).max()
    row("forward kinematics (2000 frames)", fk * 1e3, "ms", "< 100 ms", fk < 0.1,
        f"joint-by-joint loop {loop * 1e3:.1f} ms ({loop / fk:.1f}x), max difference {same:.1e} m")

    joints = joint_positions(Motion.zeros(1))
    stick = StickRenderer(256, 256).fit(joints)
    stick.render_frame(joints[0])
    frames = best_of(args.repeat, lambda: [stick.render_frame(joints[0]) for _ in range(100)])
    row("stick preview (256x256)", 100 / frames, "fps", "> 200 fps", 100 / frames > 200)


if __name__ == "__main__":
    main()
