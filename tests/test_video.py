"""--capture-video's parts (agents/video.py): MinAtar frames drawn from the channels, GIF encoding
that keeps every colour, a recorded game that is the environment's own game, Atari's RGB screen."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from agents import video


def test_minatar_frame_paints_each_channel_in_its_colour():
    rng = np.random.default_rng(0)
    obs = (rng.random((4, 10, 10)) < 0.3).astype(np.uint8)
    frame = video.minatar_frame(obs, cell=3)
    assert frame.shape == (30, 30, 3) and frame.dtype == np.uint8
    for y in range(10):
        for x in range(10):
            active = [c for c in range(4) if obs[c, y, x]]
            expected = video.PALETTE[active[-1]] if active else np.zeros(3, np.uint8)  # the later channel shows
            block = frame[3 * y : 3 * y + 3, 3 * x : 3 * x + 3]
            assert (block == expected).all(), (y, x, active)


def test_gif_keeps_every_frame_and_colour():
    rng = np.random.default_rng(1)
    frames = np.stack([video.minatar_frame((rng.random((7, 10, 10)) < 0.2).astype(np.uint8), cell=4) for _ in range(12)])
    gif = video.encode_gif(frames, fps=15)
    with Image.open(io.BytesIO(gif)) as image:
        assert image.n_frames == 12
        for t in range(12):
            image.seek(t)
            assert (np.asarray(image.convert("RGB")) == frames[t]).all(), t
    summary = video.video_summary("videos/Breakout", gif, 40, 40)
    assert summary.value[0].image.encoded_image_string == gif and summary.value[0].image.colorspace == 3


def test_recorded_minatar_game_is_the_environment_s_own_game():
    from envs.minatar import MinAtarVecEnv

    actions = np.random.default_rng(2).integers(0, 3, size=10_000)
    step = iter(range(10_000))
    frames, ret = video.play_minatar("Breakout", lambda obs: actions[[next(step)]], seed=5, max_steps=10_000)
    # the same game replayed by hand: same seed, same actions
    with MinAtarVecEnv("Breakout", 1, seed=5, train=False) as env:
        obs, total, expected = env.reset(), 0.0, []
        for t in range(10_000):
            expected.append(video.minatar_frame(obs[0, :4]))
            obs, reward, _, _, info = env.step(actions[[t]])
            total += float(reward[0])
            if info["game_over"][0]:
                break
    assert len(frames) == len(expected) and (frames == np.stack(expected)).all()
    assert ret == total


@pytest.mark.atari
def test_atari_frames_are_the_emulator_rgb_screen():
    frames, ret = video.play_atari("Breakout", lambda obs: np.zeros(len(obs), dtype=np.int64), seed=1, max_steps=20)
    assert frames.shape == (21, 210, 160, 3) and frames.dtype == np.uint8
    assert len(np.unique(frames[-1].reshape(-1, 3), axis=0)) > 3  # a colour screen, not a grayscale observation
