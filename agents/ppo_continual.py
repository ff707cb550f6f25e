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
Parsing, the suite defaults and presets, and every check of a run before it starts are
:mod:`agents.config`'s; this file is the config (``Args``) and the loop.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal, Optional, Sequence

import numpy as np
import torch

from agents import tracking
from agents.config import Setup, game_budgets, prepare
from agents.evaluation import collect_observations, evaluate, evaluate_random
from agents.fastpath import FastPath, SplitEnv, progress_line
from agents.lean import EpisodeLog, Minibatches, PackedPolicy
from agents.methods_cli import with_method_flags, write_hparams
from agents.plasticity_metrics import GradNormMeter, plasticity_metrics
from agents.ppo_math import (APPROX_KL, CLIPFRAC, STATS, Update, build_optimizer, compute_gae, make_update,
                             normalize_advantages, optimizer_covers, set_lr)
from reporting.results import (
    RESULTS_FILE,
    RESULTS_FORMAT,
    continual_metrics,
    load_results,
    normalization_note,
    remove_stale_temps,
    normalized,
    write_json_atomic,
)
from agents.rollout import Policy, Rollout
from agents.rundir import CHECKPOINT_FORMAT, clear_run_dir
from agents.runtime import NonFiniteLoss, StopRequest, UserError, all_finite, rng_state, save_atomic, set_rng_state, versions
from reporting.tb_events import add_scalars
from reporting.tensorboard_layout import LAYOUT as TB_LAYOUT
from agents.video import VIDEO_MAX_STEPS, capture_videos
from agscl.base import retrain_start
from envs.atari import MAX_EPISODE_FRAMES
from envs.suites import get_suite


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
    cores, else their thread pools oversubscribe them"""
    track: bool = False
    """log the run to Weights & Biases (its TensorBoard scalars and the config; the optional extra `.[track]`;
    WANDB_MODE=offline keeps it on disk)"""
    wandb_project_name: str = "agscl-atari"
    """the W&B project"""
    wandb_entity: Optional[str] = None
    """the W&B entity (team); default: the logged-in user's"""
    run_name: Optional[str] = None
    """directory name under --runs-dir (default: <exp_name>__<method>__<seed>__<unix time>); must not exist"""
    runs_dir: str = "runs"
    """where run directories are created"""
    preset: Literal["none", "paper"] = "none"
    """`paper`: the authors' released code (8 paper games, 10M steps each, 128 envs x 64 steps, ...: docs/paper_preset.md
    lists every value and its source line); flags given explicitly still override it"""
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
    trunk_init: Literal["orthogonal", "torch_default"] = "orthogonal"
    """the trunk's initialization, also used by AGS-CL's (I.2) re-draw: `orthogonal` (gain sqrt 2, zero biases: cleanrl's)
    or `torch_default` (PyTorch's Kaiming-uniform weights and uniform biases: the authors' trunk)"""
    activation: Literal["relu", "crelu"] = "relu"
    """the trunk's activation: `crelu` is CReLU, cat(relu(x), relu(-x)) (Abbas et al. 2023, against loss of
    plasticity): each layer's outputs double, so the next layer and the heads read twice the inputs (--channels and
    --hidden still count units; minatar's parameter count is matched by `--hidden 64`, docs/agent.md); not with
    agscl"""
    layer_norm: bool = False
    """a LayerNorm before each activation of the trunk (a conv's: over its channels at each position; Juliani & Ash
    2024 recommend it with shrink-and-perturb); not with agscl; packnet trains its affine parameters in the first game
    only, as biases"""

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
    """evaluate the most likely action instead of sampling the policy (the authors' evaluation)"""
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
    stay fp32); `auto`: on where bf16 is fast (CUDA Ampere+, CPU with AMX), off elsewhere"""
    channels_last: bool = True
    """feed the trunk channels-last (NHWC) observations, the layout oneDNN/cuDNN convolve fastest"""
    overlap_env: bool = True
    """step the environments as two halves, each half stepping while the policy infers on the other"""
    fewer_syncs: bool = True
    """no per-minibatch host syncs (non-finite loss checked once per epoch); pinned, non-blocking host-to-device copies
    on CUDA"""
    compile: bool = False
    """run the trunk through `torch.compile` (inductor; dynamic shapes); meant for GPUs (docs/scale.md)"""
    packed_rollout: bool = True
    """MinAtar on the CPU: the rollout's inference on weights packed once per update (agents/lean.py PackedPolicy):
    the same log-probabilities and values up to float rounding, actions from the same distribution; ignored where the
    trunk is not MinAtar's fp32 one"""
    fused_loss: bool = True
    """the PPO loss and its gradient in the logits and values computed in one pass (agents/ppo_math.py `ppo_loss`);
    off: cleanrl's expression through autograd. The same loss and gradients up to float rounding"""
    fused_adam: bool = True
    """Adam as one fused kernel and the gradient-norm clip as multi-tensor kernels: the same update up to float
    rounding"""
    fused_penalty: bool = True
    """EWC/MAS: add the penalty's gradient to the weights' gradients after the backward pass instead of building it
    into the loss's autograd graph: the same update up to float rounding"""


Args = with_method_flags(Args, default_method="agscl")  # type: ignore[misc]


class Stopped(Exception):
    """SIGINT/SIGTERM: the run checkpointed at the end of an update and stops (exit 128 + signal)."""


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
            self.method.attach_optimizer(self.optimizer)  # every optimizer the method may edit (ReDo's moments)
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

    def plasticity(self, inputs: Any, grads: GradNormMeter) -> dict[str, float]:
        """The trunk's plasticity metrics (agents/plasticity_metrics.py) on ``inputs`` (scaled float
        batches of the current game) and the gradient norms ``grads`` recorded in the last update,
        logged as ``plasticity/<key>`` at this global step; returned flat for results.json."""
        metrics = plasticity_metrics(self.agent.trunk, inputs, grads.result())
        add_scalars(self.writer, [(f"plasticity/{k}", v) for k, v in metrics.items()], self.global_step)
        return metrics

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
            with self.eval_env(self.games[j], seed, args.eval_episodes) as env, self.method.use_task(j):
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
        tracked = tracking.start(args, self.run_dir) if args.track else None  # before the writer: W&B mirrors its events
        self.writer = SummaryWriter(self.run_dir, purge_step=self.global_step + 1 if resumed else None)
        if not resumed:
            self.writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(
                f"|{k}|{v}|" for k, v in dataclasses.asdict(args).items()))
            self.writer.add_custom_scalars(TB_LAYOUT)
            ref = self.results["reference"]
            if ref is not None:
                self.writer.add_text("normalization", normalization_note(
                    f"the fine-tuning run {ref['run']}", ref.get("undefined") or ()))
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
                where = None
            self.results["progress"]["status"] = "stopped: non-finite loss"
            self.write_results()
            game = self.games[min(self.game, len(self.games) - 1)]
            # without a checkpoint, --resume would restart the same config and diverge the same way
            advice = (f"{where}; continue from it with --resume {self.run_dir}" if where else
                      f"no checkpoint was written before it: start again with a smaller --learning-rate "
                      f"(this run's: {args.learning_rate:g})")
            print(f"error: {exc} at global_step={self.global_step} (game {game}): run stopped; {advice}",
                  file=sys.stderr, flush=True)
            return 1
        finally:
            self.writer.close()
            if tracked is not None:
                tracked.finish()

    def train_game(self) -> None:
        """Game ``self.game`` from update ``self.update`` on; each update: rollout -> advantages -> update -> log."""
        args, agent, method, device = self.args, self.agent, self.method, self.device
        g, game = self.game, self.games[self.game]
        self.num_updates, self.steps_per_game = self.game_updates[g], self.game_steps[g]
        if self.update == 0:
            self.measure_random(g)
        env = SplitEnv(lambda n, seed: self.make_env(game, n, seed, train=True), args.num_envs,
                       args.seed + 10_007 * g + 7_919 * self.update, parts=2 if self.fast.overlap else 1)
        try:
            rollout, current_policy, update_minibatch = self.begin_game(g, env)
            while self.update < self.num_updates:
                t_update = time.time()
                self.update += 1
                lr, grads, last, eval_due = self.begin_update(g)

                batch = rollout.collect(current_policy(), self.global_step)  # 1. the rollout
                self.global_step = batch.global_step

                with torch.no_grad():  # 2. advantages and returns
                    next_value = agent.get_value(batch.next_obs, g).reshape(-1)
                    advantages, returns = compute_gae(batch.rewards, batch.values, batch.dones, next_value, batch.next_done,
                                                      args.gamma, args.gae_lambda, batch.final_values, batch.autoreset)
                b_advantages, b_returns, b_values = advantages.reshape(-1), returns.reshape(-1), batch.values.reshape(-1)
                if args.norm_adv and args.norm_adv_scope == "batch":  # once over the whole batch (the authors)
                    b_advantages = normalize_advantages(b_advantages)
                b_obs = batch.obs.reshape((-1,) + self.suite.obs_shape)
                minibatches = Minibatches(agent, b_obs, batch.actions.reshape(-1), batch.logprobs.reshape(-1),
                                          b_advantages, b_returns, b_values)

                clipfracs = []  # 3. the update: epochs of minibatches
                for _epoch in range(args.update_epochs):
                    for index in torch.randperm(self.batch_size, device=device).split(self.minibatch_size):
                        loss, penalty, stats = update_minibatch(minibatches.take(index), minibatches.channels, self.optimizer,
                                                                lr, grads)
                        clipfracs.append(stats[CLIPFRAC])
                    method.end_epoch(lr)
                    self.fast.end_epoch()
                    if args.target_kl is not None and stats[APPROX_KL] > args.target_kl:
                        break

                self.log_update(g, lr, t_update, b_values, b_returns, loss, penalty, stats, clipfracs, last)  # 4. log
                if eval_due:  # the plasticity metrics on this update's observations, then the evaluation
                    self.plasticity(ScaledBatches(b_obs, args.importance_batch, device, self.suite.obs_scale), self.grad_meter)
                    self.evaluate_all(g, boundary=False)
                if not last:
                    self.checkpoint_if_due()
                    self.stop_if_requested()
            self.end_game(g, env, rollout.next_obs)
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

    def begin_game(self, g: int, env: SplitEnv) -> tuple[Rollout, Callable[[], Policy], Update]:
        """Game ``g``'s head, optimizer and ``method.begin_task``; its rollout, the rollout's policy
        (packed or plain, chosen here once: a function that builds it on the current weights) and
        the minibatch update (its implementations chosen once, :func:`agents.ppo_math.make_update`)."""
        args, agent, method, device, game = self.args, self.agent, self.method, self.device, self.games[g]
        if self.update == 0:
            if len(agent.heads) != g:
                raise RuntimeError(f"expected {g} heads before game {g}, found {len(agent.heads)}")
            agent.add_head(env.action_count)
            self.results["action_counts"].append(env.action_count)
            self.results["games_info"].append({"game": game, "action_count": env.action_count, "steps": 0,
                                               "updates": 0, "train_seconds": 0.0})
        if self.optimizer is None or (args.optimizer_per_game and self.update == 0):
            self.optimizer = build_optimizer(agent.trunk, agent.heads, g, args.learning_rate, args.optimizer_per_game,
                                             fused=args.fused_adam)
            method.attach_optimizer(self.optimizer)
        if not args.optimizer_per_game:
            optimizer_covers(self.optimizer, agent.heads)  # this game's head joins the sequence's Adam
        params = list(agent.trunk.parameters()) + list(agent.heads[g].parameters())
        method.begin_task(g)
        self.prune_at = retrain_start(method, self.num_updates)  # PackNet: prune, then retrain the kept weights
        self.grad_meter = GradNormMeter(agent.trunk)  # the trunk's gradient norms in updates followed by an evaluation
        packed = args.packed_rollout and device.type == "cpu" and PackedPolicy.supports(agent)
        self.log(f"game {g + 1}/{len(self.games)}: {game} ({env.action_count} actions), "
                 f"updates {self.update + 1}..{self.num_updates} of {self.batch_size} steps, method {args.method}, "
                 f"{self.fast.describe()}{', packed rollout' if packed else ''}")
        episodes = EpisodeLog(game, self.writer, lambda text: print(text, flush=True))
        rollout = Rollout(env, args.num_steps, self.suite.obs_shape, device, self.fast.to_device,
                          lambda x: agent.get_value(x, g), episodes, args.bootstrap_time_limits, self.suite.next_step_autoreset)
        if packed:  # the weights are fixed until the update, so the packed policy is built once per rollout
            current_policy: Callable[[], Policy] = lambda: PackedPolicy(agent, g, env.used_channels)
        else:
            act: Policy = lambda x: agent.act_and_value(x, g)
            current_policy = lambda: act
        return rollout, current_policy, make_update(agent, g, method, params, args, self.fast.check_finite)

    def begin_update(self, g: int) -> tuple[float, GradNormMeter | None, bool, bool]:
        """The update's learning rate (annealed within the game) after PackNet's pruning where its
        retraining begins; the gradient meter where plasticity metrics follow (else None); whether
        it is the game's last update, and whether an evaluation follows it."""
        args = self.args
        game_step, last = self.update * self.batch_size, self.update == self.num_updates
        eval_due = not last and args.eval_every > 0 and (
            game_step // args.eval_every > (game_step - self.batch_size) // args.eval_every)
        self.grad_meter.reset()
        frac = 1.0 - (self.update - 1.0) / self.num_updates if args.anneal_lr else 1.0
        lr = frac * args.learning_rate
        if self.update == self.prune_at:  # PackNet: prune, then retrain the kept weights with a fresh Adam
            self.method.prune(g)
            self.optimizer = build_optimizer(self.agent.trunk, self.agent.heads, g, args.learning_rate,
                                             args.optimizer_per_game, fused=args.fused_adam)
            self.method.attach_optimizer(self.optimizer)
            self.log(f"{args.method}: pruned for {self.games[g]}, retraining updates {self.prune_at}..{self.num_updates}")
        set_lr(self.optimizer, lr)
        return lr, self.grad_meter if last or eval_due else None, last, eval_due

    def log_update(self, g: int, lr: float, t_update: float, values: torch.Tensor, returns: torch.Tensor, loss: torch.Tensor,
                   penalty: torch.Tensor, stats: torch.Tensor, clipfracs: list[torch.Tensor], last: bool) -> None:
        """The update's scalars (its last minibatch's losses, the mean clip fraction), the regularizer's
        statistics, the progress line and the game's training time."""
        args, info_g = self.args, self.results["games_info"][g]
        y_pred, y_true = values.cpu().numpy(), returns.cpu().numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
        info_g["steps"], info_g["updates"] = self.update * self.batch_size, self.update
        info_g["train_seconds"] += time.time() - t_update
        info_g["train_sps"] = info_g["steps"] / max(info_g["train_seconds"], 1e-9)
        self.session_steps += self.batch_size
        sps = int(self.session_steps / (time.time() - self.session_start))
        last_mb = dict(zip(STATS, stats.unbind()))
        names = ("value_loss", "policy_loss", "entropy", "penalty", "old_approx_kl", "approx_kl", "clipfrac", "loss")
        losses = dict(zip(names, torch.stack([last_mb["v_loss"], last_mb["pg_loss"], last_mb["entropy"], penalty.to(self.device),
                                              last_mb["old_approx_kl"], last_mb["approx_kl"], torch.stack(clipfracs).mean(),
                                              loss]).tolist()))
        scalars = {"charts/learning_rate": lr, "charts/game": g, "losses/explained_variance": explained_var,
                   "charts/SPS": sps, **{f"losses/{k}": v for k, v in losses.items() if k != "loss"}}
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, self.global_step)
        regularizer = {} if last else self.log_statistics()  # the last update's come after end_task, same step
        extra = " ".join(f"{k}={v:.4g}" for k, v in regularizer.items() if k in ("sparsity", "frozen_groups"))
        game_left = self.steps_per_game - self.update * self.batch_size
        left = progress_line(sps, game_left, game_left + sum(self.game_steps[g + 1:]))
        self.log(f"game={self.games[g]} {g + 1}/{len(self.games)} update={self.update}/{self.num_updates} {left} "
                 f"loss={losses['loss']:.4f} {extra}".rstrip())

    def checkpoint_if_due(self) -> None:
        """A periodic checkpoint within the game: every ``--checkpoint-every`` steps, or ``--checkpoint-minutes``."""
        args, game_step = self.args, self.update * self.batch_size
        every = args.checkpoint_every
        by_steps = every and game_step // every > (game_step - self.batch_size) // every
        by_clock = args.checkpoint_minutes and time.time() - self.last_checkpoint_time >= 60 * args.checkpoint_minutes
        if by_steps or by_clock:
            self.checkpoint(boundary=False)
            self.log(f"checkpoint {self.last_checkpoint}")

    def end_game(self, g: int, env: SplitEnv, next_obs: np.ndarray) -> None:
        """The end of game ``g``: the method's importance from the trained policy's own play (from
        ``next_obs`` on), the plasticity metrics before ``end_task`` (AGS-CL's (I.2) re-draws nodes)."""
        args, method, device = self.args, self.method, self.device
        t0 = time.time()
        count = min(args.importance_obs, self.steps_per_game)
        with method.use_task(g):
            stored, _ = collect_observations(self.agent, env, next_obs, g, count, device)
        batches = ScaledBatches(stored, args.importance_batch, device, self.suite.obs_scale)
        plasticity = self.plasticity(batches, self.grad_meter)
        method.end_task(g, batches)
        del stored, batches
        stats = {**self.log_statistics(), **plasticity}
        self.writer.add_scalar("regularizer/dormant_fraction", plasticity["dormant_fraction"], self.global_step)
        self.results["regularizer"].append({"game": g, "game_name": self.games[g], "global_step": self.global_step, **stats})
        self.log(f"end of {self.games[g]}: {args.method} importance from {count} observations ({time.time() - t0:.1f}s)")


def restore_finished_results(setup: Setup) -> bool:
    """A finished run's ``results.json`` rewritten from its final checkpoint when it is missing,
    unreadable (a truncated write by another tool, a disk error) or not marked finished (killed
    between the last checkpoint and the last write): the checkpoint holds the whole results.
    Returns whether it was rewritten; a sound file is left as it is."""
    path = os.path.join(setup.run_dir, RESULTS_FILE)
    try:
        if load_results(setup.run_dir)["progress"]["status"] == "finished":
            return False
    except ValueError:
        pass
    results, ckpt = setup.checkpoint["results"], setup.checkpoint
    results["progress"].update(status="finished", games_done=len(setup.games), global_step=int(ckpt["global_step"]))
    write_json_atomic(path, results)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: bad input is one line on stderr and exit code 2, before any environment exists."""
    try:
        setup = prepare(Args, argv)
    except UserError as exc:
        print(f"ppo_continual: error: {exc}", file=sys.stderr)
        return 2
    args = setup.args
    if setup.checkpoint is not None and setup.checkpoint["game"] >= len(setup.games):
        rebuilt = " (results.json rebuilt from its checkpoint)" if restore_finished_results(setup) else ""
        print(f"{setup.run_dir} is already finished ({len(setup.games)} games): nothing to resume{rebuilt}")
        return 0
    torch.backends.cudnn.deterministic = args.torch_deterministic
    if setup.restart:
        print(f"{setup.run_dir} has no checkpoint: restarting it from its stored config", flush=True)
    if setup.checkpoint is None and os.path.isdir(setup.run_dir):
        clear_run_dir(setup.run_dir)  # a killed start's leftovers (anything else was refused by prepare)
    os.makedirs(setup.run_dir, exist_ok=True)
    print(f"run {setup.run_dir}: games {' '.join(setup.games)}, method {args.method}, device {setup.device}", flush=True)
    try:
        return Run(setup).run()
    except KeyboardInterrupt:
        print(f"interrupted: continue with --resume {setup.run_dir}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
