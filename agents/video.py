"""Gameplay videos at every game boundary (``--capture-video``, cleanrl's flag).

After each game of the sequence, one evaluation game of every game learned so far is played
with that game's head and recorded, so forgetting can be *seen*: Breakout played after
Breakout, then Breakout played after Freeway. Each video goes

- to ``runs/<name>/videos/after<k>-<last game>_<game>.gif`` (k = games learned), and
- to TensorBoard as ``videos/<game>`` at the boundary's global step, in the format of
  ``SummaryWriter.add_video`` (an animated GIF image summary, shown in the Images tab; its step
  slider moves from one boundary to the next).

Frames: a MinAtar observation is 10x10 cells of boolean channels; each channel gets its own
colour (:data:`PALETTE`; where channels overlap, the later channel's colour shows) and each cell
becomes a block of pixels. Atari frames are the emulator's RGB screen: envpool renders none,
so the recorded game runs on ale-py (through gymnasium, with the agent's preprocessing: 4-frame
skip with max-pooling, 84x84 grayscale, 4 stacked frames, up to 30 no-ops and FIRE at reset,
no sticky actions).

Encoding is imageio's GIF writer (Pillow), a registry library: ``SummaryWriter.add_video``
itself needs ``moviepy.editor``, which moviepy 2 removed (add_video then writes nothing), so the
same summary is built here from imageio's bytes. The recorded game uses its own generators
(actions and environment), so recording never changes what the run learns.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

from agscl.base import eval_mode
from common.runio import write_atomic

#: One colour per MinAtar channel (RGB), distinct on a black background.
PALETTE = np.array([
    [255, 255, 255], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
    [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230], [170, 110, 40],
], dtype=np.uint8)
#: Pixels per MinAtar cell (a 10x10 grid becomes 120x120).
CELL_PIXELS = 12
VIDEO_DIR = "videos"
#: Cap on a recorded game's agent steps (also capped by --eval-max-frames): 5 minutes at 15 frames/s.
VIDEO_MAX_STEPS = 4_500


def minatar_frame(obs: np.ndarray, cell: int = CELL_PIXELS) -> np.ndarray:
    """An RGB frame ``(10*cell, 10*cell, 3)`` of one MinAtar observation ``(C, 10, 10)``:
    black background, every active cell of channel ``c`` in ``PALETTE[c]``."""
    channels, height, width = obs.shape
    if channels > len(PALETTE):
        raise ValueError(f"{channels} channels: the palette has {len(PALETTE)} colours")
    image = np.zeros((height, width, 3), dtype=np.uint8)
    for c in range(channels):
        image[obs[c] > 0] = PALETTE[c]
    return np.repeat(np.repeat(image, cell, axis=0), cell, axis=1)


def encode_gif(frames: np.ndarray, fps: int) -> bytes:
    """Frames ``(T, H, W, 3)`` uint8 as an animated GIF that loops (imageio, Pillow plugin)."""
    import imageio.v3 as iio

    # Pillow's fast octree quantizer (2): exact for MinAtar's few colours, faster than the default (docs/scale.md)
    return iio.imwrite("<bytes>", frames, extension=".gif", duration=1000.0 / fps, loop=0, quantizer=2)


def video_summary(tag: str, gif: bytes, height: int, width: int) -> Any:
    """The summary ``SummaryWriter.add_video`` writes: an image whose bytes are an animated GIF."""
    from torch.utils.tensorboard.summary import Summary

    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif)
    return Summary(value=[Summary.Value(tag=tag, image=image)])


def play_minatar(game: str, policy: Callable[[np.ndarray], np.ndarray], seed: int, max_steps: int) -> tuple[np.ndarray, float]:
    """One whole game (at most ``max_steps`` steps) of a MinAtar game: its frames and its return."""
    from envs.minatar import MinAtarVecEnv

    with MinAtarVecEnv(game, 1, seed=seed, train=False, max_episode_steps=max_steps) as env:
        channels = env.used_channels
        obs = env.reset()
        frames = [minatar_frame(obs[0, :channels])]
        while True:
            # same-step autoreset: the step that ends the game returns the next game's first frame
            obs, _, _, _, info = env.step(policy(obs))
            if info["game_over"][0]:
                return np.stack(frames), float(info["episode_return"][0])
            frames.append(minatar_frame(obs[0, :channels]))


def play_atari(game: str, policy: Callable[[np.ndarray], np.ndarray], seed: int, max_steps: int) -> tuple[np.ndarray, float]:
    """One game (at most ``max_steps`` agent steps) of an Atari game on ale-py: the emulator's RGB
    screen after every agent step, and the game's raw return."""
    import ale_py
    import gymnasium as gym
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    from envs.atari import FRAME_SKIP, STACK

    gym.register_envs(ale_py)
    env = gym.make(f"ALE/{game}-v5", frameskip=1, repeat_action_probability=0.0, full_action_space=False,
                   render_mode="rgb_array")
    env = FrameStackObservation(AtariPreprocessing(env, noop_max=30, frame_skip=FRAME_SKIP, screen_size=84,
                                                   grayscale_obs=True, terminal_on_life_loss=False), STACK)
    try:
        obs, _ = env.reset(seed=seed)
        total = 0.0
        if "FIRE" in env.unwrapped.get_action_meanings()[1:2]:  # as envpool's use_fire_reset
            obs, reward, *_ = env.step(1)
            total += float(reward)
        frames = [env.render()]
        for _ in range(max_steps):
            obs, reward, terminated, truncated, _ = env.step(int(policy(np.asarray(obs)[None])[0]))
            total += float(reward)
            frames.append(env.render())
            if terminated or truncated:
                break
        return np.stack(frames), total
    finally:
        env.close()


@torch.no_grad()
def capture_videos(writer: Any, agent: Any, suite: str, games: Sequence[str], run_dir: str, global_step: int,
                   device: torch.device, seed: int, max_steps: int, fps: int) -> list[dict[str, Any]]:
    """Record one game of every game in ``games`` (all learned so far, in order; head ``j``
    plays ``games[j]``) after the last of them; write the GIFs and the TensorBoard videos.
    Returns one record per video: game, path, bytes, frames, return, seconds."""
    play = play_minatar if suite == "minatar" else play_atari
    after = len(games)
    os.makedirs(os.path.join(run_dir, VIDEO_DIR), exist_ok=True)
    records = []
    for j, game in enumerate(games):
        t0 = time.time()
        generator = torch.Generator(device=device)
        generator.manual_seed(seed + 7_919 * j)

        def policy(obs: np.ndarray) -> np.ndarray:
            return agent.act(torch.from_numpy(np.ascontiguousarray(obs)).to(device), j, generator=generator).cpu().numpy()

        with eval_mode(agent):
            frames, ret = play(game, policy, seed + 7_919 * j, max_steps)
        gif = encode_gif(frames, fps)
        path = os.path.join(run_dir, VIDEO_DIR, f"after{after}-{games[-1]}_{game}.gif")
        write_atomic(path, lambda f: f.write(gif))
        writer.file_writer.add_summary(video_summary(f"videos/{game}", gif, frames.shape[1], frames.shape[2]), global_step)
        records.append({"game": game, "after": games[-1], "global_step": global_step, "path": os.path.relpath(path, run_dir),
                        "bytes": len(gif), "frames": int(frames.shape[0]), "return": ret,
                        "seconds": round(time.time() - t0, 3)})
    writer.flush()
    return records
