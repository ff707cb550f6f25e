"""Continual PPO on a sequence of Atari (or MinAtar) games, regularized between games (cleanrl style).

One agent learns the games in order, each once (pure continual learning): a shared CNN trunk
(Nature-CNN for Atari, MinAtar's conv16 + fc128 for ``--suite minatar``) and one actor and
one critic head per game. Between games a continual-learning method
from the :mod:`agscl` registry (``finetune``, ``ewc``, ``online_ewc``, ``mas``, ``agscl``, ``packnet``;
its flags are built from the registry by :mod:`agents.methods_cli`) protects what the trunk
learned, driven through the one protocol of :mod:`agscl.base`::

    python agents/ppo_continual.py --games StarGunner Boxing --method agscl --steps-per-game 1000000
    python agents/ppo_continual.py --preset paper --method agscl           # the authors' setting
    python agents/ppo_continual.py --suite minatar --games Breakout SpaceInvaders Freeway
    python agents/ppo_continual.py --resume runs/<run_name>                # continue a killed run

Everything lands in ``runs/<run_name>/``: TensorBoard events, ``results.json`` (config,
versions, the game-by-game score matrix, the evaluation timeline, regularizer statistics;
rewritten atomically after every evaluation) and ``ckpt/`` (``latest.pt``, updated at game
boundaries and every ``--checkpoint-every`` steps, and ``game<i>.pt`` after each game).
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import tyro

from agents.evaluation import collect_observations, dormant_fraction, evaluate, evaluate_random
from agents.fastpath import FastPath, SplitEnv, progress_line
from agents.lean import EpisodeLog
from agents.methods_cli import method_kwargs, retrain_start, task_context, with_method_flags
from agents.network import Agent, layer_init
from agents.ppo_math import build_optimizer, compute_gae, normalize_advantages, optimizer_covers, set_lr
from agents.results import (
    RESULTS_FILE,
    RESULTS_FORMAT,
    continual_metrics,
    remove_stale_temps,
    normalized,
    write_json_atomic,
)
from agents.rundir import CHECKPOINT_FORMAT, args_from_config, clear_run_dir, has_run_files, load_checkpoint, load_reference, stored_config
from agents.runtime import StopRequest, UserError, all_finite, rng_state, save_atomic, set_rng_state, versions
from agents.tensorboard_layout import LAYOUT as TB_LAYOUT
from agents.tensorboard_layout import write_hparams
from agents.video import VIDEO_MAX_STEPS, capture_videos
from agscl.registry import make_method
from envs.atari import MAX_EPISODE_FRAMES, PAPER_GAMES
from envs.minatar import MAX_EPISODE_STEPS as MINATAR_MAX_STEPS
from envs.suites import SUITES, get_suite

#: The authors' code computed RL importances about 21x larger than the plain mean activation
#: used here, so their lambda corresponds to ``OMEGA_SCALE * lambda`` here.
OMEGA_SCALE = 21.0


@dataclass
class Args:
    exp_name: str = "ppo_continual"
    """the name of this experiment (first part of the default run name)"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled, cuda is used when available"""
    torch_threads: int = 0
    """CPU threads of torch's intra-op pool (0: torch's default, all cores); use 1 when several runs share the
    cores, else their thread pools oversubscribe them (5x slower for two small MinAtar runs on 2 cores)"""
    run_name: Optional[str] = None
    """directory name under --runs-dir (default: <exp_name>__<method>__<seed>__<unix time>); must not exist"""
    runs_dir: str = "runs"
    """where run directories are created"""
    preset: Literal["none", "paper"] = "none"
    """`paper`: the authors' released code (docs/paper_preset.md lists every value and its source line: 8 paper
    games, 10M steps each, 128 envs x 64 steps, 10 epochs, 64 minibatches, Adam 3e-4 for the whole sequence, clip
    0.2, batch-wide advantage normalization, bootstrapped time limits, no entropy bonus, trunk conv 128/256/128,
    mu=0.1, agscl-lambda=1000*21, rho=1); flags given explicitly still override it"""
    resume: Optional[str] = None
    """continue the run in this directory from its last checkpoint, with its stored config (other flags are ignored);
    without a usable checkpoint it restarts from the stored config. A resume is not bit-identical to an
    uninterrupted run: environments are re-created with a fresh seed, so games in progress are dropped"""
    reference_run: Optional[str] = None
    """a finished fine-tuning run whose best score per game normalizes the returns (paper Figure 7a)"""

    # continual setting
    suite: Literal["atari", "minatar"] = "atari"
    """game suite: `atari` (ALE through envpool/ale-py) or `minatar` (10x10 MinAtar games, optional extra
    `.[minatar]`); `minatar` also switches the network and PPO defaults to the suite's (see SUITE_DEFAULTS)"""
    games: tuple[str, ...] = ("StarGunner", "Boxing")
    """the games, learned in this order; a named sequence of the suite (atari: `paper`; minatar: `interfere`,
    `all`) may be given instead of names (minatar default: Breakout SpaceInvaders Freeway)"""
    sequence: Optional[str] = None
    """a named game sequence of the suite instead of --games (atari `paper`: StarGunner Boxing VideoPinball
    CrazyClimber Gopher Robotank DemonAttack NameThisGame)"""
    steps_per_game: tuple[int, ...] = (10_000_000,)
    """environment steps per game (rounded down to whole PPO updates): one value for every game, or one value per
    game in the order of --games (a game that needs longer, e.g. MinAtar Asterix)"""
    backend: Literal["envpool", "ale"] = "envpool"
    """vector-environment backend (same observations and rewards)"""
    env_threads: int = 0
    """emulator threads (0: the backend's default)"""

    # network
    width: int = 1
    """width multiplier of the trunk's conv channels (the authors used 4)"""
    channels: tuple[int, ...] = (32, 64, 64)
    """conv channels of the trunk before --width: atari, three (Nature-CNN 8x8/4, 4x4/2, 3x3/1; the authors:
    32 64 32 with width 4 = 128 256 128); minatar, one or more 3x3/1 convs (default 16)"""
    hidden: int = 512
    """units of the trunk's fully connected layer (minatar default 128)"""

    # continual-learning method: --method and its flags are added from the agscl registry (agents/methods_cli.py)
    importance_obs: int = 4096
    """observations of a finished game, collected with the trained policy, for the method's importance (Omega, Fisher,
    MAS); capped at the game's own steps per game (a short run cannot spend longer on importance than on training)"""
    importance_batch: int = 256
    """batch size in which those observations are passed to the method"""

    # evaluation and checkpoints
    eval_every: int = 1_000_000
    """evaluate every game learned so far every this many steps of a game (0: only after each game)"""
    eval_episodes: int = 30
    """whole games per evaluation and game (the paper used 30)"""
    eval_envs: int = 8
    """parallel environments per evaluation"""
    eval_max_frames: int = MAX_EPISODE_FRAMES
    """cap on an evaluation game's length in frames (atari: the standard 27000 steps x 4 frames; minatar: one
    frame per step, default 10000)"""
    train_max_frames: int = MAX_EPISODE_FRAMES
    """cap on a training game's length in frames, where it is truncated (same units and defaults as
    --eval-max-frames; the authors' gym NoFrameskip-v4 games: 400000)"""
    random_episodes: int = 30
    """whole games of the uniform random policy per game, measured at the game's start by the same evaluation
    code: the baseline of the random-shifted metrics (normalized return, P, S)"""
    eval_greedy: bool = False
    """evaluate the most likely action instead of sampling the policy"""
    capture_video: bool = False
    """at each game boundary, record one evaluation game of every learned game: runs/<name>/videos/*.gif and TensorBoard
    (agents/video.py)"""
    checkpoint_every: int = 500_000
    """steps between periodic checkpoints within a game (0: only at game boundaries and on the clock)"""
    checkpoint_minutes: float = 10.0
    """wall-clock minutes between checkpoints within a game (0: off); SIGINT/SIGTERM also checkpoint and stop"""

    # PPO (cleanrl's Atari defaults)
    num_envs: int = 8
    """the number of parallel game environments"""
    num_steps: int = 128
    """the number of steps to run in each environment per policy rollout"""
    learning_rate: float = 2.5e-4
    """the learning rate of the optimizer"""
    anneal_lr: bool = True
    """anneal the learning rate linearly to 0 within each game (restarts at each game)"""
    optimizer_per_game: bool = True
    """a fresh Adam (trunk + the game's head) for each game; off: one Adam over the trunk and every head for the
    whole sequence, its moments carried from game to game and through checkpoints (the authors' code)"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    num_minibatches: int = 4
    """the number of mini-batches"""
    update_epochs: int = 4
    """the K epochs to update the policy"""
    norm_adv: bool = True
    """advantages normalization"""
    norm_adv_scope: Literal["minibatch", "batch"] = "minibatch"
    """normalize the advantages over each minibatch (cleanrl) or once over the whole batch (the authors' code)"""
    bootstrap_time_limits: bool = False
    """a game cut by --train-max-frames is not a game over: its last step's target bootstraps from the value of
    the game's final observation (the authors' use_proper_time_limits); off: truncation is terminal (cleanrl)"""
    clip_coef: float = 0.1
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """use a clipped loss for the value function"""
    ent_coef: float = 0.01
    """coefficient of the entropy"""
    vf_coef: float = 0.5
    """coefficient of the value function"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    target_kl: Optional[float] = None
    """the target KL divergence threshold"""

    # speed (agents/fastpath.py); all off is the plain path: fp32, contiguous, env and inference in sequence
    bf16: Literal["auto", "on", "off"] = "auto"
    """bf16 autocast over the trunk's forward and backward (weights, gradients, Adam, heads, losses and the regularizer
    stay fp32); `auto`: on where bf16 is fast (CUDA Ampere+, CPU with AMX), off elsewhere (an AVX512-BF16 CPU without
    AMX runs the Nature CNN no faster in bf16)"""
    channels_last: bool = True
    """feed the trunk channels-last (NHWC) observations, the layout oneDNN/cuDNN convolve fastest"""
    overlap_env: bool = True
    """step the environments as two halves, each half stepping while the policy infers on the other"""
    fewer_syncs: bool = True
    """no per-minibatch host syncs (non-finite loss checked once per epoch); pinned, non-blocking host-to-device copies
    on CUDA (the policy samples from its logits without a distribution object and its argument checks, always:
    agents/lean.py)"""
    compile: bool = False
    """run the trunk through `torch.compile` (inductor; dynamic shapes); off by default: on this 2-core CPU it did
    not pay (README, Scale); meant for GPUs"""
    fused_adam: bool = True
    """Adam as one fused kernel (`fused=True`) and the gradient-norm clip as multi-tensor kernels, instead of a
    Python loop over parameters: the same update up to float rounding (tests/test_lean.py)"""
    fused_penalty: bool = True
    """EWC/MAS: add the quadratic penalty's gradient to the weights' gradients with multi-tensor kernels after the
    backward pass, instead of building it into the loss's autograd graph (the same update, up to float rounding)"""


Args = with_method_flags(Args, default_method="agscl")  # type: ignore[misc]


#: Defaults that ``--suite`` changes (explicit flags and presets override them). MinAtar: the
#: suite's usual network (Young & Tian 2019: one 3x3 conv of 16 channels, a 128-unit layer) and
#: cleanrl's Atari PPO settings unchanged (8 envs x 128 steps, 4 epochs x 4 minibatches, Adam
#: 2.5e-4 annealed, clip 0.1, GAE 0.95, entropy 0.01). 300k steps a game: in the probe behind
#: the README table each game of the benchmark sequence is learned well above random by then
#: (Breakout ~5 vs 0.25, SpaceInvaders 12-20 vs 4, Freeway ~25 vs 0.3 within 100k).
SUITE_DEFAULTS: dict[str, dict[str, Any]] = {
    "atari": {},
    "minatar": dict(
        games=("Breakout", "SpaceInvaders", "Freeway"),
        channels=(16,),
        hidden=128,
        steps_per_game=(300_000,),
        eval_every=100_000,
        eval_max_frames=MINATAR_MAX_STEPS,
        train_max_frames=MINATAR_MAX_STEPS,
        checkpoint_every=100_000,
        importance_obs=2048,
        # from the (mu, lambda) search `python -m sweep --config bench/configs/minatar_agscl_search.toml`
        # (README, "Calibrating AGS-CL for MinAtar"): the best accumulated normalized return of
        # mu {1, 4, 16} x lambda {10, 100}; mu 1 scored within the seeds' spread of it, mu 16 halved plasticity
        mu=4.0,
        agscl_lambda=100.0,
        overlap_env=False,  # MinAtar steps in Python at recv: nothing to overlap, halves only add calls
    ),
}

#: ``--preset paper``: every value, its source line in the authors' code and what differs is in docs/paper_preset.md.
PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    "paper": dict(
        games=PAPER_GAMES,
        steps_per_game=(10_000_000,),
        num_envs=128,
        num_steps=64,
        update_epochs=10,
        num_minibatches=64,
        learning_rate=3e-4,
        ent_coef=0.0,
        width=4,
        channels=(32, 64, 32),
        hidden=512,
        mu=0.1,
        agscl_lambda=1000.0 * OMEGA_SCALE,
        rho=1.0,
        eval_episodes=30,
        importance_obs=2560,
        clip_coef=0.2,
        optimizer_per_game=False,
        norm_adv_scope="batch",
        bootstrap_time_limits=True,
        train_max_frames=400_000,
    ),
}


class NonFiniteLoss(Exception):
    """The loss became NaN/inf: the run stops, its last checkpoint is left untouched."""


class Stopped(Exception):
    """SIGINT/SIGTERM: the run checkpointed at the end of an update and stops (exit 128 + signal)."""


def game_budgets(steps_per_game: int | Sequence[int], games: int) -> list[int] | None:
    """Steps of each game from ``--steps-per-game`` (one value for all, or one per game); None if neither."""
    values = [int(steps_per_game)] if isinstance(steps_per_game, int) else [int(v) for v in steps_per_game]
    if len(values) == 1:
        return values * games
    return values if len(values) == games else None


def trunk_channels(args: Args) -> tuple[int, ...]:
    return tuple(c * args.width for c in args.channels)


class ScaledBatches:
    """Re-iterable float batches (``obs * scale`` on ``device``) of stored uint8 observations:
    the ``inputs`` that ``method.end_task`` expects (the trunk does no scaling itself)."""

    def __init__(self, obs: torch.Tensor, batch: int, device: torch.device, scale: float) -> None:
        self.obs, self.batch, self.device, self.scale = obs, batch, device, scale

    def __iter__(self) -> Iterator[torch.Tensor]:
        for start in range(0, self.obs.shape[0], self.batch):
            yield self.obs[start : start + self.batch].to(self.device).float() * self.scale

    def __len__(self) -> int:
        return -(-self.obs.shape[0] // self.batch)


# --------------------------------------------------------------------------------------------
# configuration: parsing and validation (no environment is built here)
# --------------------------------------------------------------------------------------------
def _flag_from_argv(argv: Sequence[str], flag: str, default: str) -> str:
    for i, token in enumerate(argv):
        if token == flag and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith(flag + "="):
            return token.split("=", 1)[1]
    return default


def parse_args(argv: Sequence[str] | None = None) -> Args:
    """tyro parse with the ``--suite`` defaults and then ``--preset`` applied first, so that
    explicit flags override both."""
    argv = list(sys.argv[1:] if argv is None else argv)
    suite = _flag_from_argv(argv, "--suite", "atari")
    if suite not in SUITE_DEFAULTS:
        raise UserError(f"--suite {suite!r} is not valid: choose one of {', '.join(SUITES)}")
    preset = _flag_from_argv(argv, "--preset", "none")
    if preset not in PRESETS:
        raise UserError(f"--preset {preset!r} is not valid: choose one of {', '.join(PRESETS)}")
    if any(t == "--sequence" or t.startswith("--sequence=") for t in argv) and any(
            t == "--games" or t.startswith("--games=") for t in argv):
        raise UserError("--sequence and --games were both given: name the games with one of them")
    if preset == "paper" and suite != "atari":
        raise UserError(f"--preset paper is the authors' Atari setting: it cannot be combined with --suite {suite}")
    default = dataclasses.replace(Args(), suite=suite, preset=preset, **SUITE_DEFAULTS[suite], **PRESETS[preset])  # type: ignore[arg-type]
    return tyro.cli(Args, args=argv, default=default, description=__doc__.split("\n\n")[0])


def _check(name: str, ok: bool, allowed: str, value: Any) -> None:
    if not ok:
        raise UserError(f"--{name.replace('_', '-')}={value!r} is out of range: allowed {allowed}")


def validate(args: Args) -> list[str]:
    """Every check that needs no environment; returns the resolved game list."""
    suite = get_suite(args.suite)
    if args.sequence is not None and args.sequence.lower() not in suite.sequences:
        raise UserError(f"--sequence {args.sequence!r} is not a {args.suite} sequence: choose one of {', '.join(suite.sequences)}")
    try:
        games = suite.resolve_games([args.sequence] if args.sequence else list(args.games), args.backend)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.suite == "minatar":
        try:
            __import__("minatar")
        except ImportError:
            raise UserError('--suite minatar needs the optional extra: pip install -e ".[minatar]"') from None
    positive_ints = ("num_envs", "num_steps", "num_minibatches", "update_epochs", "eval_episodes",
                     "eval_envs", "importance_obs", "importance_batch", "width", "hidden", "random_episodes")
    for name in positive_ints:
        _check(name, getattr(args, name) >= 1, "an integer >= 1", getattr(args, name))
    if args.suite == "atari":
        _check("channels", len(args.channels) == 3 and all(c >= 1 for c in args.channels), "three integers >= 1", args.channels)
    else:
        _check("channels", len(args.channels) >= 1 and all(c >= 1 for c in args.channels), "one or more integers >= 1", args.channels)
    for name in ("eval_every", "checkpoint_every", "env_threads", "torch_threads"):
        _check(name, getattr(args, name) >= 0, "an integer >= 0", getattr(args, name))
    skip = get_suite(args.suite).frame_skip
    _check("checkpoint_minutes", math.isfinite(args.checkpoint_minutes) and args.checkpoint_minutes >= 0,
           "a finite number >= 0", args.checkpoint_minutes)
    for name in ("eval_max_frames", "train_max_frames"):
        _check(name, getattr(args, name) >= skip, f"an integer >= {skip} (one agent step is {skip} frames)", getattr(args, name))
    for name in ("learning_rate", "clip_coef", "max_grad_norm"):
        value = getattr(args, name)
        _check(name, math.isfinite(value) and value > 0, "a finite number > 0", value)
    for name in ("ent_coef", "vf_coef"):
        value = getattr(args, name)
        _check(name, math.isfinite(value) and value >= 0, "a finite number >= 0", value)
    for name in ("gamma", "gae_lambda"):
        value = getattr(args, name)
        _check(name, 0 <= value <= 1, "a number in [0, 1]", value)
    if args.target_kl is not None:
        _check("target_kl", math.isfinite(args.target_kl) and args.target_kl > 0, "a finite number > 0", args.target_kl)
    batch = args.num_envs * args.num_steps
    if batch % args.num_minibatches:
        raise UserError(
            f"--num-minibatches={args.num_minibatches} does not divide the batch num_envs*num_steps={batch}: "
            f"choose a divisor of {batch}"
        )
    budgets = game_budgets(args.steps_per_game, len(games))
    _check("steps_per_game", budgets is not None, f"one value, or one per game ({len(games)})", args.steps_per_game)
    _check("steps_per_game", min(budgets or [0]) >= batch, f"at least one PPO batch (num_envs*num_steps={batch}) per game",
           args.steps_per_game)
    return games


def build_agent_and_method(args: Args, device: torch.device, num_games: int) -> tuple[Agent, Any]:
    """The agent (no heads yet) and its method; a method's bad hyperparameter is a UserError."""
    agent = Agent(trunk_channels(args), args.hidden, args.suite).to(device)
    try:
        kwargs = method_kwargs(args, num_tasks=num_games, seed=args.seed, init_fn=layer_init)
        method = make_method(args.method, agent.trunk, agent.heads, **kwargs)
    except ValueError as exc:
        raise UserError(f"--method {args.method}: {exc}") from None
    return agent, method


@dataclass
class Setup:
    """A validated run, ready to build environments."""

    args: Args
    games: list[str]
    run_dir: str
    device: torch.device
    agent: Agent
    method: Any
    checkpoint: dict[str, Any] | None
    reference: dict[str, Any] | None  # results["reference"] less its "run" (see agents.results.reference_scores)
    restart: bool = False  # --resume of a run without a checkpoint: started again in its directory


def prepare(argv: Sequence[str] | None = None) -> Setup:
    """Parse and check everything (games, ranges, method, run directory, reference, resume)."""
    args = parse_args(argv)
    checkpoint, restart = None, False
    if args.resume is not None:
        run_dir = os.path.normpath(args.resume)
        if not os.path.isdir(run_dir):
            raise UserError(f"--resume {args.resume}: no such run directory")
        latest = os.path.join(run_dir, "ckpt", "latest.pt")
        if os.path.exists(latest):
            checkpoint = load_checkpoint(latest)
            args = args_from_config(checkpoint["config"], run_dir, Args)
        else:  # stopped before its first checkpoint: start again from the stored config
            args, restart = args_from_config(stored_config(run_dir), run_dir, Args), True
        args.resume = None
    games = validate(args)
    if args.torch_threads:  # before the network's initialization, whose QR-based orthogonal draws depend on it
        torch.set_num_threads(args.torch_threads)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    random.seed(args.seed)  # a resumed run restores its RNG states from the checkpoint later
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    agent, method = build_agent_and_method(args, device, len(games))
    reference = None
    if checkpoint is None:
        if args.run_name is None:
            args.run_name = f"{args.exp_name}__{args.method}__{args.seed}__{int(time.time())}"
        if os.sep in args.run_name.strip(os.sep) or args.run_name in ("", ".", ".."):
            raise UserError(f"--run-name={args.run_name!r} must be a plain directory name")
        if not restart:
            run_dir = os.path.join(args.runs_dir, args.run_name)
        if not restart and has_run_files(run_dir):
            raise UserError(f"{run_dir} already exists: choose another --run-name, or continue it with --resume {run_dir}")
        if args.reference_run is not None:
            reference = load_reference(args.reference_run, games)
    else:
        if checkpoint["games"] != games:
            raise UserError(f"{run_dir}: checkpoint games {checkpoint['games']} do not match its config {games}")
        ref = checkpoint["results"].get("reference")
        reference = None if ref is None else {k: v for k, v in ref.items() if k != "run"}
        try:
            for count in checkpoint["action_counts"]:
                agent.add_head(int(count))
            agent.load_state_dict(checkpoint["agent"])
            method.load_state_dict(checkpoint["method"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{run_dir}/ckpt/latest.pt does not fit its config ({exc.__class__.__name__}: {str(exc).splitlines()[0][:120]})") from None
    if args.suite == "atari" and args.backend == "envpool":
        try:
            import envpool  # noqa: F401
        except ImportError:
            raise UserError("--backend envpool: envpool is not installed here (Linux only): use --backend ale") from None
    return Setup(args, games, run_dir, device, agent, method, checkpoint, reference, restart)


# --------------------------------------------------------------------------------------------
# run-time helpers
# --------------------------------------------------------------------------------------------
class Run:
    """One continual run: the PPO loop over games, evaluations, logging and checkpoints."""

    def __init__(self, setup: Setup) -> None:
        self.s = setup
        self.args, self.games, self.device = setup.args, setup.games, setup.device
        self.suite = get_suite(self.args.suite)
        self.agent, self.method = setup.agent, setup.method
        self.run_dir = setup.run_dir
        self.ckpt_dir = os.path.join(self.run_dir, "ckpt")
        args = self.args
        self.batch_size = args.num_envs * args.num_steps
        self.minibatch_size = self.batch_size // args.num_minibatches
        # whole PPO updates per game; num_updates / steps_per_game are the current game's (set in train_game)
        self.game_updates = [steps // self.batch_size for steps in game_budgets(args.steps_per_game, len(self.games)) or []]
        self.game_steps = [u * self.batch_size for u in self.game_updates]
        self.num_updates, self.steps_per_game = self.game_updates[0], self.game_steps[0]
        ckpt = setup.checkpoint
        if ckpt is None:
            n = len(self.games)
            self.results: dict[str, Any] = {
                "format": RESULTS_FORMAT,
                "config": dataclasses.asdict(args),
                "versions": [],  # one entry per start, restart and resume (see Run.run)
                "games": list(self.games),
                "steps_per_game": self.steps_per_game,  # the first game's (all games' when they are equal)
                "game_steps": list(self.game_steps),
                "action_counts": [],
                "score_matrix": [[None] * n for _ in range(n)],
                "score_std_matrix": [[None] * n for _ in range(n)],
                "random": {},
                "metrics": {},
                "timeline": [],
                "regularizer": [],
                "games_info": [],
                "reference": None if setup.reference is None else {"run": args.reference_run, **setup.reference},
                "progress": {"global_step": 0, "games_done": 0, "status": "running"},
            }
            self.game, self.update, self.global_step = 0, 0, 0
        else:
            self.results = ckpt["results"]
            self.game, self.update, self.global_step = int(ckpt["game"]), int(ckpt["update"]), int(ckpt["global_step"])
            set_rng_state(ckpt["rng"])
        # the Adam of this game (--optimizer-per-game) or of the whole sequence; None until built
        self.optimizer: torch.optim.Optimizer | None = None
        if ckpt is not None and ckpt.get("optimizer") is not None:
            self.optimizer = build_optimizer(self.agent.trunk, self.agent.heads, self.game, args.learning_rate,
                                             args.optimizer_per_game, fused=args.fused_adam)
            self.optimizer.load_state_dict(ckpt["optimizer"])
        self.last_checkpoint: str | None = None
        self.stop = StopRequest()
        self.fast = FastPath(args, self.device)
        self.fast.apply(self.agent)

    def stop_if_requested(self) -> None:
        """After SIGINT/SIGTERM: checkpoint here (the update just finished), mark the results
        ``interrupted`` and stop."""
        if self.stop.signum is None:
            return
        if self.last_checkpoint_step != self.global_step or self.last_checkpoint is None:
            self.checkpoint(boundary=False)
        self.results["progress"]["status"] = "interrupted"
        self.write_results()
        raise Stopped()

    # -- outputs ---------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        print(f"global_step={self.global_step} {msg}", flush=True)

    def write_results(self) -> None:
        self.results["progress"]["global_step"] = self.global_step
        write_json_atomic(os.path.join(self.run_dir, RESULTS_FILE), self.results)

    def checkpoint(self, boundary: bool) -> None:
        """Atomically save everything needed to continue from here (never a non-finite model)."""
        if not all_finite(self.agent):
            raise NonFiniteLoss("non-finite parameters")
        state = {
            "format": CHECKPOINT_FORMAT,
            "config": dataclasses.asdict(self.args),
            "games": list(self.games),
            "action_counts": [int(h[0].out_features) for h in self.agent.heads],
            "game": self.game,
            "update": self.update,
            "global_step": self.global_step,
            "agent": self.agent.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "method": self.method.state_dict(),
            "rng": rng_state(),
            "results": self.results,
        }
        latest = os.path.join(self.ckpt_dir, "latest.pt")
        save_atomic(state, latest)
        if boundary:
            save_atomic(state, os.path.join(self.ckpt_dir, f"game{self.game - 1}.pt"))
        self.last_checkpoint = latest
        self.last_checkpoint_step, self.last_checkpoint_time = self.global_step, time.time()

    def log_statistics(self) -> dict[str, float]:
        stats = {k: float(v) for k, v in self.method.statistics().items()}
        for key, value in stats.items():
            self.writer.add_scalar(f"regularizer/{key}", value, self.global_step)
        return stats

    def make_env(self, game: str, num_envs: int, seed: int, train: bool) -> Any:
        args = self.args
        cap = args.train_max_frames if train else args.eval_max_frames
        return self.suite.make(game, num_envs, seed=seed, backend=args.backend, train=train,
                               max_episode_frames=cap, num_threads=args.env_threads)

    def eval_env(self, game: str, seed: int, episodes: int) -> Any:
        return self.make_env(game, min(self.args.eval_envs, episodes), seed, train=False)

    def measure_random(self, g: int) -> None:
        """The random-policy score of game ``g``, once per run, by the same evaluation code."""
        game, args = self.games[g], self.args
        if game in self.results["random"]:
            return
        t0 = time.time()
        seed = args.seed + 100_003 * (g + 1) + 999_983
        with self.eval_env(game, seed, args.random_episodes) as env:
            stats = evaluate_random(env, args.random_episodes, seed)
        self.results["random"][game] = stats
        self.writer.add_scalar(f"eval/{game}/random_return", stats["mean"], self.global_step)
        self.log(f"random policy on {game}: {stats['mean']:.2f} +- {stats['std']:.2f} over {stats['episodes']} games "
                 f"({time.time() - t0:.1f}s)")

    def evaluate_all(self, upto: int, boundary: bool) -> None:
        """Evaluate games ``0..upto`` with their own heads; log, record, write results.json."""
        args = self.args
        scores = {}
        t0 = time.time()
        for j in range(upto + 1):
            seed = args.seed + 100_003 * (j + 1) + self.global_step % 1_000_003
            with self.eval_env(self.games[j], seed, args.eval_episodes) as env, task_context(self.method, j):
                stats = evaluate(self.agent, j, env, args.eval_episodes, self.device, seed, greedy=args.eval_greedy)
            scores[self.games[j]] = stats
            for key in ("mean", "std", "min", "max"):
                tag = "return" if key == "mean" else f"return_{key}"
                self.writer.add_scalar(f"eval/{self.games[j]}/{tag}", stats[key], self.global_step)
            if boundary:
                self.results["score_matrix"][upto][j] = stats["mean"]
                self.results["score_std_matrix"][upto][j] = stats["std"]
        entry: dict[str, Any] = {"global_step": self.global_step, "game": upto, "game_name": self.games[upto],
                                 "game_step": self.update * self.batch_size, "boundary": boundary, "scores": scores}
        summary = " ".join(f"{g}={s['mean']:.1f}" for g, s in scores.items())
        ref = self.results["reference"]
        if ref is not None:
            norm, acc = normalized(scores, ref, self.results["random"])
            entry["normalized"] = {g: None if math.isnan(v) else v for g, v in norm.items()}
            entry["accumulated_normalized"] = acc
            for g, v in norm.items():
                if not math.isnan(v):
                    self.writer.add_scalar(f"eval/{g}/normalized_return", v, self.global_step)
            self.writer.add_scalar("eval/accumulated_normalized_return", acc, self.global_step)
            summary += f" accumulated_normalized={acc:.3f}"
        self.results["timeline"].append(entry)
        if boundary:
            self.results["metrics"] = metrics = continual_metrics(self.results)
            for g, values in metrics["per_game"].items():
                for key, value in values.items():
                    if value is not None:
                        self.writer.add_scalar(f"metrics/{g}/{key}", value, self.global_step)
            for key in ("P_mean", "S_mean", "forgetting_mean_normalized", "bwt_mean_normalized"):
                if metrics.get(key) is not None:
                    self.writer.add_scalar(f"metrics/{key}", metrics[key], self.global_step)
        if boundary and args.capture_video:
            videos = capture_videos(self.writer, self.agent, args.suite, self.games[: upto + 1], self.run_dir, self.global_step,
                                    self.device, args.seed + 31_337 * (upto + 1), min(args.eval_max_frames // self.suite.frame_skip,
                                    VIDEO_MAX_STEPS), fps=15)
            self.results.setdefault("videos", []).extend(videos)
            summary += f" videos {sum(v['bytes'] for v in videos) / 1e6:.1f} MB in {sum(v['seconds'] for v in videos):.1f}s"
        self.write_results()
        self.log(f"eval{' (end of game)' if boundary else ''} after {self.games[upto]}: {summary} ({time.time() - t0:.1f}s)")

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> int:
        from torch.utils.tensorboard import SummaryWriter

        args = self.args
        os.makedirs(self.ckpt_dir, exist_ok=True)
        for path in remove_stale_temps(self.run_dir, self.ckpt_dir):
            self.log(f"removed {path}, left by a write that was killed")
        resumed = self.s.checkpoint is not None
        kind = "resume" if resumed else ("restart" if self.s.restart else "start")
        self.results["versions"].append({**versions(), "kind": kind, "global_step": self.global_step,
                                         "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        self.writer = SummaryWriter(self.run_dir, purge_step=self.global_step + 1 if resumed else None)
        if not resumed:
            self.writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(
                f"|{k}|{v}|" for k, v in dataclasses.asdict(args).items()))
            self.writer.add_custom_scalars(TB_LAYOUT)
            self.write_results()
        else:
            self.log(f"resuming {self.run_dir} with its stored config (other flags are ignored) at game {self.game + 1} "
                     f"({self.games[self.game]}), update {self.update}")
        self.session_start, self.session_steps = time.time(), 0
        self.last_checkpoint_step, self.last_checkpoint_time = self.global_step, time.time()
        try:
            with self.stop:
                while self.game < len(self.games):
                    self.train_game()
                    self.stop_if_requested()
            self.results["progress"].update(status="finished", games_done=len(self.games))
            self.write_results()
            write_hparams(self.writer, args, self.results)
            self.log(f"finished: results in {os.path.join(self.run_dir, RESULTS_FILE)}, TensorBoard events in {self.run_dir}")
            return 0
        except Stopped:
            print(f"stopped by {self.stop.name} at global_step={self.global_step}: checkpoint {self.last_checkpoint}; "
                  f"continue with --resume {self.run_dir}", file=sys.stderr, flush=True)
            return 128 + int(self.stop.signum or 0)
        except NonFiniteLoss as exc:
            latest = os.path.join(self.ckpt_dir, "latest.pt")
            if self.last_checkpoint:
                where = f"last good checkpoint {self.last_checkpoint} (global_step={self.last_checkpoint_step}) is intact"
            elif os.path.exists(latest):
                where = f"last good checkpoint {latest} is intact"
            else:
                where = "no checkpoint was written before it"
            self.results["progress"]["status"] = "stopped: non-finite loss"
            self.write_results()
            game = self.games[min(self.game, len(self.games) - 1)]
            print(f"error: {exc} at global_step={self.global_step} (game {game}): run stopped; {where}; "
                  f"continue from it with --resume {self.run_dir}", file=sys.stderr, flush=True)
            return 1
        finally:
            self.writer.close()

    def train_game(self) -> None:
        args, agent, method, device, fast = self.args, self.agent, self.method, self.device, self.fast
        g, game = self.game, self.games[self.game]
        self.num_updates, self.steps_per_game = self.game_updates[g], self.game_steps[g]
        if self.update == 0:
            self.measure_random(g)
        env = SplitEnv(lambda n, seed: self.make_env(game, n, seed, train=True), args.num_envs,
                       args.seed + 10_007 * g + 7_919 * self.update, parts=2 if fast.overlap else 1)
        try:
            if self.update == 0:
                if len(agent.heads) != g:
                    raise RuntimeError(f"expected {g} heads before game {g}, found {len(agent.heads)}")
                agent.add_head(env.action_count)
                self.results["action_counts"].append(env.action_count)
                self.results["games_info"].append({"game": game, "action_count": env.action_count, "steps": 0,
                                                   "updates": 0, "train_seconds": 0.0})
            info_g = self.results["games_info"][g]
            if self.optimizer is None or (args.optimizer_per_game and self.update == 0):
                self.optimizer = build_optimizer(agent.trunk, agent.heads, g, args.learning_rate, args.optimizer_per_game,
                                                 fused=args.fused_adam)
            if not args.optimizer_per_game:
                optimizer_covers(self.optimizer, agent.heads)  # this game's head joins the sequence's Adam
            optimizer, params = self.optimizer, list(agent.trunk.parameters()) + list(agent.heads[g].parameters())
            method.begin_task(g)
            prune_at = retrain_start(method, self.num_updates)  # PackNet: prune, then retrain the kept weights
            self.log(f"game {g + 1}/{len(self.games)}: {game} ({env.action_count} actions), "
                     f"updates {self.update + 1}..{self.num_updates} of {self.batch_size} steps, method {args.method}, "
                     f"{fast.describe()}")

            obs_shape = self.suite.obs_shape
            obs_buf = torch.zeros((args.num_steps, args.num_envs) + obs_shape, dtype=torch.uint8, device=device)
            actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long, device=device)
            logprobs = torch.zeros((args.num_steps, args.num_envs), device=device)
            rewards = torch.zeros((args.num_steps, args.num_envs), device=device)
            dones = torch.zeros((args.num_steps, args.num_envs), device=device)
            values = torch.zeros((args.num_steps, args.num_envs), device=device)
            # --bootstrap-time-limits: V(final observation) at steps cut by the time limit, else 0
            final_values = torch.zeros((args.num_steps, args.num_envs), device=device) if args.bootstrap_time_limits else None
            next_obs = torch.from_numpy(env.reset()).to(device)
            next_done = torch.zeros(args.num_envs, device=device)

            episodes = EpisodeLog(game, self.writer, lambda text: print(text, flush=True))

            def receive(k: int, step: int) -> None:
                """Collect environment group ``k``'s result of ``step``; finished episodes are logged per update."""
                part = env.parts[k]
                o, reward, term, trunc, info = env.recv(k)
                self.global_step += part.stop - part.start
                rewards[step, part] = fast.to_device(reward)
                next_obs[part] = fast.to_device(o)
                next_done[part] = fast.to_device(term | trunc)
                if final_values is not None:
                    cut = np.flatnonzero(trunc & ~term)  # the game goes on: bootstrap from its final observation
                    final_values[step, part] = 0.0
                    if len(cut):
                        with torch.no_grad():
                            v = agent.get_value(fast.to_device(info["final_obs"][cut]), g).flatten()
                        final_values[step, part.start + torch.from_numpy(cut).to(device)] = v
                if info["game_over"].any():
                    episodes.add(self.global_step, info)

            while self.update < self.num_updates:
                t_update = time.time()
                self.update += 1
                frac = 1.0 - (self.update - 1.0) / self.num_updates if args.anneal_lr else 1.0
                lr = frac * args.learning_rate
                if self.update == prune_at:  # PackNet: prune, then retrain the kept weights with a fresh Adam
                    method.prune(g)
                    optimizer = self.optimizer = build_optimizer(agent.trunk, agent.heads, g, args.learning_rate,
                                                                 args.optimizer_per_game, fused=args.fused_adam)
                    self.log(f"{args.method}: pruned for {game}, retraining updates {prune_at}..{self.num_updates}")
                set_lr(optimizer, lr)

                with torch.inference_mode():  # no autograd bookkeeping; results written in place into the buffers
                    for step in range(args.num_steps):
                        # one group of all envs, or (--overlap-env) two halves: each infers while the other steps
                        for k, part in enumerate(env.parts):
                            if step > 0:
                                receive(k, step - 1)
                            obs_buf[step, part] = next_obs[part]
                            dones[step, part] = next_done[part]
                            action, logprobs[step, part], values[step, part] = agent.act_and_value(next_obs[part], g)
                            actions[step, part] = action
                            env.send(k, action.cpu().numpy())
                    for k in range(len(env.parts)):
                        receive(k, args.num_steps - 1)
                episodes.flush()

                with torch.no_grad():
                    next_value = agent.get_value(next_obs, g).reshape(-1)
                    advantages, returns = compute_gae(rewards, values, dones, next_value, next_done, args.gamma,
                                                      args.gae_lambda, final_values)

                b_obs = obs_buf.reshape((-1,) + obs_shape)
                b_logprobs, b_actions = logprobs.reshape(-1), actions.reshape(-1)
                b_advantages, b_returns, b_values = advantages.reshape(-1), returns.reshape(-1), values.reshape(-1)
                batch_norm = args.norm_adv and args.norm_adv_scope == "batch"
                if batch_norm:  # once over the whole batch (the authors); else per minibatch below (cleanrl)
                    b_advantages = normalize_advantages(b_advantages)

                clipfracs = []
                fused = args.fused_penalty and method.fused_penalty
                zero = torch.zeros((), device=device)
                for _epoch in range(args.update_epochs):
                    perm = torch.randperm(self.batch_size, device=device)
                    for start in range(0, self.batch_size, self.minibatch_size):
                        mb = perm[start : start + self.minibatch_size]
                        _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb], g, b_actions[mb])
                        logratio = newlogprob - b_logprobs[mb]
                        ratio = logratio.exp()
                        with torch.no_grad():
                            old_approx_kl = (-logratio).mean()
                            approx_kl = ((ratio - 1) - logratio).mean()
                            clipfracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean())
                        mb_adv = b_advantages[mb]
                        if args.norm_adv and not batch_norm:
                            mb_adv = normalize_advantages(mb_adv)
                        pg_loss = torch.max(-mb_adv * ratio, -mb_adv * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)).mean()
                        newvalue = newvalue.view(-1)
                        if args.clip_vloss:
                            v_unclipped = (newvalue - b_returns[mb]) ** 2
                            v_clipped = b_values[mb] + torch.clamp(newvalue - b_values[mb], -args.clip_coef, args.clip_coef)
                            v_loss = 0.5 * torch.max(v_unclipped, (v_clipped - b_returns[mb]) ** 2).mean()
                        else:
                            v_loss = 0.5 * ((newvalue - b_returns[mb]) ** 2).mean()
                        entropy_loss = entropy.mean()
                        penalty = zero if fused else method.penalty()
                        loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef + penalty
                        if fast.nonfinite(loss):
                            raise NonFiniteLoss(f"non-finite loss ({loss.item()})")
                        optimizer.zero_grad()
                        loss.backward()
                        if fused:
                            penalty = method.add_penalty_grad()
                            loss = loss.detach() + penalty
                        nn.utils.clip_grad_norm_(params, args.max_grad_norm, foreach=args.fused_adam or None)
                        optimizer.step()
                        method.after_step(lr)
                    method.end_epoch(lr)
                    if fast.epoch_nonfinite():
                        raise NonFiniteLoss("non-finite loss in this epoch")
                    if args.target_kl is not None and approx_kl > args.target_kl:
                        break

                y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
                var_y = np.var(y_true)
                explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
                info_g["steps"], info_g["updates"] = self.update * self.batch_size, self.update
                info_g["train_seconds"] += time.time() - t_update
                info_g["train_sps"] = info_g["steps"] / max(info_g["train_seconds"], 1e-9)
                self.session_steps += self.batch_size
                sps = int(self.session_steps / (time.time() - self.session_start))
                names = ("value_loss", "policy_loss", "entropy", "penalty", "old_approx_kl", "approx_kl", "clipfrac", "loss")
                losses = dict(zip(names, torch.stack([v_loss, pg_loss, entropy_loss, penalty.detach().to(device), old_approx_kl,
                                                      approx_kl, torch.stack(clipfracs).mean(), loss.detach()]).tolist()))
                scalars = {"charts/learning_rate": lr, "charts/game": g, "losses/explained_variance": explained_var,
                           "charts/SPS": sps, **{f"losses/{k}": v for k, v in losses.items() if k != "loss"}}
                for tag, value in scalars.items():
                    self.writer.add_scalar(tag, value, self.global_step)
                last = self.update == self.num_updates
                stats = {} if last else self.log_statistics()  # the last update's come after end_task, same step
                extra = " ".join(f"{k}={v:.4g}" for k, v in stats.items() if k in ("sparsity", "frozen_groups"))
                game_left = self.steps_per_game - self.update * self.batch_size
                left = progress_line(sps, game_left, game_left + sum(self.game_steps[g + 1:]))
                self.log(f"game={game} {g + 1}/{len(self.games)} update={self.update}/{self.num_updates} {left} "
                         f"loss={losses['loss']:.4f} {extra}".rstrip())

                game_step = self.update * self.batch_size
                if not last and args.eval_every and game_step // args.eval_every > (game_step - self.batch_size) // args.eval_every:
                    self.evaluate_all(g, boundary=False)
                by_steps = args.checkpoint_every and game_step // args.checkpoint_every > (game_step - self.batch_size) // args.checkpoint_every
                by_clock = args.checkpoint_minutes and time.time() - self.last_checkpoint_time >= 60 * args.checkpoint_minutes
                if not last and (by_steps or by_clock):
                    self.checkpoint(boundary=False)
                    self.log(f"checkpoint {self.last_checkpoint}")
                if not last:
                    self.stop_if_requested()

            # end of the game: importance from the trained policy's own play, then evaluation
            t0 = time.time()
            count = min(args.importance_obs, self.steps_per_game)
            with task_context(method, g):
                stored, _ = collect_observations(agent, env, next_obs.cpu().numpy(), g, count, device)
            batches = ScaledBatches(stored, args.importance_batch, device, self.suite.obs_scale)
            dormant = dormant_fraction(agent.trunk, batches)  # before end_task: (I.2) re-draws nodes
            method.end_task(g, batches)
            del stored, batches
            stats = {**self.log_statistics(), "dormant_fraction": dormant}
            self.writer.add_scalar("regularizer/dormant_fraction", dormant, self.global_step)
            self.results["regularizer"].append({"game": g, "game_name": game, "global_step": self.global_step, **stats})
            self.log(f"end of {game}: {args.method} importance from {count} observations ({time.time() - t0:.1f}s)")
        finally:
            env.close()
        self.evaluate_all(g, boundary=True)
        self.game, self.update = g + 1, 0
        self.results["progress"]["games_done"] = self.game
        if args.optimizer_per_game:
            self.optimizer = None  # the next game starts a fresh Adam
        self.checkpoint(boundary=True)
        self.write_results()
        self.log(f"checkpoint {self.last_checkpoint} (+ {os.path.join(self.ckpt_dir, f'game{g}.pt')})")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: bad input is one line on stderr and exit code 2, before any environment exists."""
    try:
        setup = prepare(argv)
    except UserError as exc:
        print(f"ppo_continual: error: {exc}", file=sys.stderr)
        return 2
    args = setup.args
    if setup.checkpoint is not None and setup.checkpoint["game"] >= len(setup.games):
        print(f"{setup.run_dir} is already finished ({len(setup.games)} games): nothing to resume")
        return 0
    torch.backends.cudnn.deterministic = args.torch_deterministic
    os.makedirs(setup.run_dir, exist_ok=True)
    if setup.restart:
        print(f"{setup.run_dir} has no checkpoint: restarting it from its stored config", flush=True)
        clear_run_dir(setup.run_dir)
    print(f"run {setup.run_dir}: games {' '.join(setup.games)}, method {args.method}, device {setup.device}", flush=True)
    try:
        return Run(setup).run()
    except KeyboardInterrupt:
        print(f"interrupted: continue with --resume {setup.run_dir}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
