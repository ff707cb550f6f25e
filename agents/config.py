"""The continual agent's configuration: parsing, suite defaults, presets and every check of a run.

``agents/ppo_continual.py`` keeps the ``Args`` dataclass (cleanrl's habit: the whole config
beside the PPO loop) and this module does everything that turns a command line into a checked,
ready run: ``--suite`` defaults and ``--preset`` values applied under explicit flags, the
ranges, the games, the method's hyperparameters, the run directory, the reference run and the
resume checkpoint, each bad value one ``UserError`` line before any environment exists. It
takes the ``Args`` class as an argument (as :func:`agents.rundir.args_from_config` does) and
never imports the agent's file, so there is no import cycle and it imports on its own.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import sys
import time
import typing
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import numpy as np
import torch

from agents import tracking
from agents.methods_cli import flag_specs, method_kwargs
from agents.network import TRUNK_INITS, Agent
from agents.rundir import args_from_config, foreign_entries, has_run_files, load_checkpoint, load_reference, stored_config
from agents.runtime import UserError
from agscl.registry import make_method, method_hparams
from common.cli import CliError, parse
from common.runio import OutputError, check_output_dir, first_line
from envs.atari import PAPER_GAMES
from envs.minatar import MAX_EPISODE_STEPS as MINATAR_MAX_STEPS
from envs.suites import SUITES, get_suite

#: The agent's ``Args`` dataclass (defined in agents/ppo_continual.py, passed in by the caller).
A = TypeVar("A")

#: The authors' code computed RL importances about 21x larger than the plain mean activation
#: used here, so their lambda corresponds to ``OMEGA_SCALE * lambda`` here.
OMEGA_SCALE = 21.0

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
        bootstrap_time_limits=False,
        train_max_frames=400_000,
        eval_max_frames=400_000,
        eval_greedy=True,
        trunk_init="torch_default",
    ),
}


#: (method, trunk option) pairs a method cannot express, and why: refused before any environment exists
#: (a composition such as ``agscl+redo`` is refused when any of its parts is). docs/agent.md, "Trunk options".
TRUNK_REFUSALS: dict[tuple[str, str], str] = {
    ("agscl", "--activation crelu"): (
        "AGS-CL's node groups send each unit to one block of the next layer's input columns (agscl/groups.py), "
        "while CReLU sends it to two (n and n+C) and makes its activation |x|, so free and important nodes are undefined"),
    ("agscl", "--layer-norm"): (
        "a node AGS-CL empties still has a non-zero output after LayerNorm (the layer's mean and variance couple "
        "its nodes), so an emptied node is not free and a frozen node's output still moves"),
}


def check_trunk_options(method: str, activation: str, layer_norm: bool) -> None:
    """``UserError`` (one line) when ``method``, or a part of a composition ``a+b``, cannot express the trunk options."""
    options = ([f"--activation {activation}"] if activation != "relu" else []) + (["--layer-norm"] if layer_norm else [])
    for part in method.split("+"):
        for option in options:
            reason = TRUNK_REFUSALS.get((part, option))
            if reason is not None:
                raise UserError(f"--method {method} cannot be combined with {option}: {reason}")


def game_budgets(steps_per_game: int | Sequence[int], games: int) -> list[int] | None:
    """Steps of each game from ``--steps-per-game`` (one value for all, or one per game); None if neither."""
    values = [int(steps_per_game)] if isinstance(steps_per_game, int) else [int(v) for v in steps_per_game]
    if len(values) == 1:
        return values * games
    return values if len(values) == games else None


def trunk_channels(args: Any) -> tuple[int, ...]:
    """The trunk's conv channels: ``--channels`` times ``--width``."""
    return tuple(c * args.width for c in args.channels)


# --------------------------------------------------------------------------------------------
# parsing and validation (no environment is built here)
# --------------------------------------------------------------------------------------------
def _flag_from_argv(argv: Sequence[str], flag: str, default: str) -> str:
    for i, token in enumerate(argv):
        if token == flag and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith(flag + "="):
            return token.split("=", 1)[1]
    return default


def parse_args(args_cls: type[A], argv: Sequence[str] | None = None) -> A:
    """tyro parse of ``args_cls`` with the ``--suite`` defaults and then ``--preset`` applied
    first, so that explicit flags override both; ``--help``'s description is the first paragraph
    of the docstring of the module that defines ``args_cls``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    suite = _flag_from_argv(argv, "--suite", "atari")
    if suite not in SUITE_DEFAULTS:
        raise UserError(f"--suite {suite!r} is not valid: choose one of {', '.join(SUITES)}")
    preset = _flag_from_argv(argv, "--preset", "none")
    if preset not in PRESETS:
        raise UserError(f"--preset {preset!r} is not valid: choose one of {', '.join(PRESETS)}")
    method = _flag_from_argv(argv, "--method", "")
    methods = typing.get_args(typing.get_type_hints(args_cls)["method"])
    if method and method not in methods:
        raise UserError(f"--method {method!r} is not valid: choose one of {', '.join(methods)}")
    if any(t == "--sequence" or t.startswith("--sequence=") for t in argv) and any(
            t == "--games" or t.startswith("--games=") for t in argv):
        raise UserError("--sequence and --games were both given: name the games with one of them")
    if preset == "paper" and suite != "atari":
        raise UserError(f"--preset paper is the authors' Atari setting: it cannot be combined with --suite {suite}")
    default = dataclasses.replace(args_cls(), suite=suite, preset=preset, **SUITE_DEFAULTS[suite], **PRESETS[preset])  # type: ignore[type-var]
    try:
        args = parse(args_cls, argv, default=default, description=_description(args_cls))
    except CliError as exc:
        raise UserError(str(exc)) from None
    for line in ignored_method_flags(args, argv):
        print(f"ppo_continual: warning: {line}", file=sys.stderr, flush=True)
    return args


def ignored_method_flags(args: Any, argv: Sequence[str]) -> list[str]:
    """One line per method flag on the command line that ``--method`` does not take (it is
    ignored: ``--method finetune --mu 5``)."""
    specs = flag_specs()
    out = []
    for token in argv:
        if not token.startswith("--"):
            continue
        name = token[2:].split("=", 1)[0].replace("-", "_")
        if name not in specs and name.startswith("no_") and name[3:] in specs:
            name = name[3:]
        hp_users = specs.get(name)
        if hp_users is not None and args.method not in hp_users[1]:
            flag = "--" + token[2:].split("=", 1)[0]
            line = f"{flag} is ignored: --method {args.method} does not take it (it is a flag of {', '.join(hp_users[1])})"
            if line not in out:
                out.append(line)
    return out


def _description(args_cls: type) -> str | None:
    """The first paragraph of the defining module's docstring (``__main__`` when run as a script)."""
    doc = getattr(sys.modules.get(args_cls.__module__), "__doc__", None)
    return doc.split("\n\n")[0] if doc else None


def _check(name: str, ok: bool, allowed: str, value: Any) -> None:
    if not ok:
        raise UserError(f"--{name.replace('_', '-')}={value!r} is out of range: allowed {allowed}")


def validate(args: Any) -> list[str]:
    """Every check that needs no environment; returns the resolved game list."""
    suite = get_suite(args.suite)
    if args.track and not tracking.available():
        raise UserError('--track needs Weights & Biases, the optional extra: pip install -e ".[track]"')
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
    check_trunk_options(args.method, args.activation, args.layer_norm)
    batch = args.num_envs * args.num_steps
    if batch % args.num_minibatches:
        raise UserError(
            f"--num-minibatches={args.num_minibatches} does not divide the batch num_envs*num_steps={batch}: "
            f"choose a divisor of {batch}"
        )
    for hp in method_hparams(args.method):
        try:
            hp.check(getattr(args, hp.flag), "--" + hp.flag.replace("_", "-"))
        except ValueError as exc:
            raise UserError(f"--method {args.method}: {exc}") from None
    budgets = game_budgets(args.steps_per_game, len(games))
    _check("steps_per_game", budgets is not None, f"one value, or one per game ({len(games)})", args.steps_per_game)
    _check("steps_per_game", min(budgets or [0]) >= batch, f"at least one PPO batch (num_envs*num_steps={batch}) per game",
           args.steps_per_game)
    return games


def build_agent_and_method(args: Any, device: torch.device, num_games: int) -> tuple[Agent, Any]:
    """The agent (no heads yet) and its method; a method's bad hyperparameter is a UserError."""
    agent = Agent(trunk_channels(args), args.hidden, args.suite, args.activation, args.layer_norm,
                  args.trunk_init).to(device)
    try:
        kwargs = method_kwargs(args, num_tasks=num_games, seed=args.seed, init_fn=TRUNK_INITS[args.trunk_init])
        method = make_method(args.method, agent.trunk, agent.heads, **kwargs)
    except ValueError as exc:
        raise UserError(f"--method {args.method}: {exc}") from None
    return agent, method


@dataclass
class Setup:
    """A validated run, ready to build environments."""

    args: Any  # an instance of the agent's Args
    games: list[str]
    run_dir: str
    device: torch.device
    agent: Agent
    method: Any
    checkpoint: dict[str, Any] | None
    reference: dict[str, Any] | None  # results["reference"] less its "run" (see reporting.results.reference_scores)
    restart: bool = False  # --resume of a run without a checkpoint: started again in its directory


def _check_writable(run_dir: str, what: str) -> None:
    """UserError naming ``run_dir`` and the reason when the run could not write there."""
    try:
        check_output_dir(run_dir, what)
    except OutputError as exc:
        raise UserError(str(exc)) from None


def prepare(args_cls: type, argv: Sequence[str] | None = None) -> Setup:
    """Parse ``argv`` into ``args_cls`` (the agent's Args) and check everything (games, ranges,
    method, run directory, reference, resume); seeds the RNGs and builds the agent and its method,
    restored from the checkpoint on ``--resume``."""
    args = parse_args(args_cls, argv)
    checkpoint, restart = None, False
    if args.resume is not None:
        run_dir = os.path.normpath(args.resume)
        if not os.path.isdir(run_dir):
            raise UserError(f"--resume {args.resume}: no such run directory")
        _check_writable(run_dir, "--resume")
        latest = os.path.join(run_dir, "ckpt", "latest.pt")
        if os.path.exists(latest):
            checkpoint = load_checkpoint(latest)
            args = args_from_config(checkpoint["config"], run_dir, args_cls)
        else:  # stopped before its first checkpoint: start again from the stored config
            args, restart = args_from_config(stored_config(run_dir), run_dir, args_cls), True
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
        if not restart:
            if os.path.lexists(run_dir) and not os.path.isdir(run_dir):
                raise UserError(f"--run-name {args.run_name}: {run_dir} exists and is not a directory: choose another --run-name")
            foreign = foreign_entries(run_dir)
            if foreign:
                raise UserError(f"{run_dir} exists and holds no run but other files ({', '.join(foreign[:3])}"
                                f"{', ...' if len(foreign) > 3 else ''}): choose another --run-name, or remove it")
            _check_writable(run_dir, "run directory")
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
            raise UserError(f"{run_dir}/ckpt/latest.pt does not fit its config ({first_line(exc)})") from None
    if args.suite == "atari" and args.backend == "envpool":
        try:
            import envpool  # noqa: F401
        except ImportError:
            raise UserError("--backend envpool: envpool is not installed here (Linux only): use --backend ale") from None
    return Setup(args, games, run_dir, device, agent, method, checkpoint, reference, restart)
