"""How far the shared trunk moved while a run learned each game, from its end-of-game checkpoints.

A continual method protects the earlier games by holding the trunk where they need it; a new
game that needs other features has to move it. When a regularized run does not learn a later
game that fine-tuning learns, this says whether its trunk could still move:

    python -m reporting.drift runs/finetune_seed1 runs/ewc_seed1 runs/agscl_seed1 [--out drift.md]

For every run and every game after the first it prints each trunk layer's relative change
``||W_j - W_{j-1}|| / ||W_{j-1}||`` (Frobenius norms of the Conv2d/Linear weight tensors; biases
and LayerNorm gains left out)
between the checkpoints written at the end of game ``j-1`` and game ``j`` (``ckpt/game<j>.pt``).
The first game has no checkpoint before it, so it has no entry; a run stops at its last
end-of-game checkpoint. For AGS-CL runs (and its compositions) a second table gives, per trunk
layer, how many nodes are important after each game (``Omega > 0``: held for the earlier games,
no longer free for the later ones): where the drift of a layer falls to zero, this says whether
its nodes are all taken.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import tyro

from common.cli import parse
from common.runio import check_output_file, first_line, write_text_atomic


def read_checkpoint(path: str) -> dict[str, Any]:
    """The tensors of an end-of-game checkpoint (``torch.load`` with ``weights_only``: no code of
    the file runs, no network is built); ValueError naming the file when it is corrupt or holds
    no agent weights."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds on a truncated or foreign file
        raise ValueError(f"{path} is corrupt or not a checkpoint ({first_line(exc)})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("agent"), dict):
        raise ValueError(f"{path} is corrupt or not a checkpoint of agents/ppo_continual.py (no agent weights)")
    return ckpt


def trunk_weights(agent_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weight matrices and kernels of the trunk's Conv2d/Linear layers in an agent
    ``state_dict`` (``trunk.<i>.weight``, in order); 1-D ones (a LayerNorm's gain, like the biases) are left out."""
    return {k: v.detach().float() for k, v in agent_state.items()
            if k.startswith("trunk.") and k.endswith(".weight") and v.dim() >= 2}


def relative_drift(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per layer, ``||after - before|| / ||before||`` (inf where ``before`` is all zeros and ``after`` is not)."""
    out = {}
    for name, w in before.items():
        change, size = float((after[name] - w).norm()), float(w.norm())
        out[name] = change / size if size > 0 else (0.0 if change == 0 else float("inf"))
    return out


def important_nodes(method_state: Any) -> Optional[list[tuple[int, int]]]:
    """AGS-CL's important trunk nodes per layer, ``(count of Omega > 0, nodes)``, from a
    checkpoint's method state (a composition's ``stability`` part); None for other methods."""
    if isinstance(method_state, dict) and isinstance(method_state.get("stability"), dict):
        method_state = method_state["stability"]
    omega = method_state.get("omega") if isinstance(method_state, dict) else None
    if not isinstance(omega, (list, tuple)) or not all(isinstance(o, torch.Tensor) for o in omega):
        return None
    return [(int((o > 0).sum()), o.numel()) for o in omega]


def run_drift(run_dir: str) -> dict[str, Any]:
    """The drift of every game after the first that has an end-of-game checkpoint in ``run_dir``."""
    ckpt_dir = os.path.join(run_dir, "ckpt")
    paths = []
    while os.path.isfile(os.path.join(ckpt_dir, f"game{len(paths)}.pt")):
        paths.append(os.path.join(ckpt_dir, f"game{len(paths)}.pt"))
    if not paths:
        raise ValueError(f"{run_dir} has no end-of-game checkpoint ({ckpt_dir}/game0.pt): give a run directory "
                         "written by agents/ppo_continual.py that finished at least one game")
    states = [read_checkpoint(p) for p in paths]
    games = list(states[0].get("games") or [f"game {j}" for j in range(len(states))])
    weights = [trunk_weights(s["agent"]) for s in states]
    rows = [{"game": games[j], "drift": relative_drift(weights[j - 1], weights[j])} for j in range(1, len(states))]
    method = (states[0].get("config") or {}).get("method")
    important = [important_nodes(s.get("method")) for s in states]
    return {"run": os.path.basename(os.path.normpath(run_dir)), "method": method, "layers": list(weights[0]), "rows": rows,
            "games": games[: len(states)], "important": important if all(i is not None for i in important) else None}


def _layer_legend(drifts: Sequence[dict[str, Any]]) -> str:
    """The runs' layer names: the most runs' names, then any others with the runs that have them."""
    layers = [", ".join(d["layers"]) for d in drifts]
    common = max(dict.fromkeys(layers), key=layers.count) if layers else ""
    return "; ".join([common] + [f"{names} in {', '.join(d['run'] for d in drifts if ', '.join(d['layers']) == names)}"
                                 for names in dict.fromkeys(layers) if names != common])


def _table(title: str, columns: list[str], rows: list[tuple[str, dict[str, str]]]) -> list[str]:
    """A Markdown table: a row per run, a cell per column it has."""
    return [title, "", "| run | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns),
            *(f"| {run} | " + " | ".join(cells.get(c, "") for c in columns) + " |" for run, cells in rows)]


def markdown(drifts: Sequence[dict[str, Any]]) -> str:
    """One table: a row per run, a column per game after the first, each cell the layers' drifts;
    for AGS-CL runs a second one: the important nodes per layer after each game."""
    during = list(dict.fromkeys(f"during {r['game']}" for d in drifts for r in d["rows"]))
    lines = _table(f"Trunk drift while learning each game (||W_end - W_start|| / ||W_start|| per layer: "
                   f"{_layer_legend(drifts)}):", during,
                   [(d["run"], {f"during {r['game']}": " / ".join(f"{v:.3f}" for v in r["drift"].values()) for r in d["rows"]})
                    for d in drifts])
    held = [d for d in drifts if d.get("important")]
    if held:
        after = list(dict.fromkeys(f"after {g}" for d in held for g in d["games"]))
        lines += ["", *_table(f"AGS-CL's important nodes per trunk layer after each game (Omega > 0, of the layer's nodes, "
                              f"layers in the order {_layer_legend(held)}; the others are free for later games):", after,
                              [(d["run"], {f"after {g}": " / ".join(f"{n} of {size}" for n, size in counts)
                                           for g, counts in zip(d["games"], d["important"])}) for d in held])]
    return "\n".join(lines)


@dataclass
class DriftArgs:
    runs: tyro.conf.Positional[tuple[str, ...]]
    """run directories of agents/ppo_continual.py"""
    out: Optional[str] = None
    """also write the table to this Markdown file"""


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse(DriftArgs, argv, description=__doc__.split("\n\n")[0])
        if not args.runs:
            raise ValueError("no run given: name one or more run directories of agents/ppo_continual.py")
        if args.out:
            check_output_file(args.out, "--out")
        missing = [r for r in args.runs if not os.path.isdir(r)]
        if missing:
            raise ValueError(f"{missing[0]}: no such run directory")
        table = markdown([run_drift(r) for r in args.runs])
    except ValueError as exc:
        print(f"drift: error: {exc}", file=sys.stderr)
        return 2
    print(table)
    if args.out:
        write_text_atomic(args.out, table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
