"""Cost of AGS-CL's proximal step against Adam, and stored floats against EWC and MAS.

Ratios are measured inside one run, interleaving the timed operations so that both sides see
the same machine load. Run: ``python bench/regularizer.py [--repeats 30] [--out bench/results]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from agscl import make_method
from common.runio import machine, machine_line, write_json_atomic


def nature_trunk(channels: tuple[int, int, int], hidden: int) -> nn.Sequential:
    c1, c2, c3 = channels
    return nn.Sequential(
        nn.Conv2d(4, c1, 8, stride=4), nn.ReLU(),
        nn.Conv2d(c1, c2, 4, stride=2), nn.ReLU(),
        nn.Conv2d(c2, c3, 3, stride=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(c3 * 7 * 7, hidden), nn.ReLU(),
    )


def timed(fn, sync) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def bench_model(label: str, channels, hidden, repeats: int, minibatch: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    trunk = nature_trunk(channels, hidden).to(device)
    heads = nn.ModuleList([nn.ModuleList([nn.Linear(hidden, 18), nn.Linear(hidden, 1)]) for _ in range(2)]).to(device)
    params = list(trunk.parameters()) + list(heads.parameters())
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    obs = torch.rand(minibatch, 4, 84, 84, device=device)
    importance_data = [torch.rand(64, 4, 84, 84, device=device)]

    ags = make_method("agscl", trunk, heads, mu=0.1, lam=2100.0, rho=0.3, seed=0)
    ags.begin_task(0)
    with torch.no_grad():  # a realistic state: about half the nodes important after task 0
        for layer in ags.layers:
            dead = torch.rand(layer.num_nodes, device=device) < 0.5
            layer.module.weight[dead] = 0
            layer.module.bias[dead] = 0
    ags.end_task(0, importance_data)
    ags.begin_task(1)
    opt = torch.optim.Adam(params, lr=2.5e-4)

    def train_step():
        out = heads[1][0](trunk(obs)).logsumexp(1).mean() + heads[1][1](trunk(obs)).mean()
        opt.zero_grad()
        out.backward()
        opt.step()

    train_step()  # materialize Adam state and gradients
    prox, adam, full, masks = [], [], [], []
    for _ in range(repeats):
        adam.append(timed(opt.step, sync))
        prox.append(timed(lambda: ags.proximal_step(2.5e-4), sync))
        masks.append(timed(ags.apply_masks, sync))
        full.append(timed(train_step, sync))

    stored = {"agscl": ags.stored_floats()}
    for name, hp in (("ewc", {"lam": 1.0}), ("mas", {"lam": 1.0})):
        method = make_method(name, trunk, heads, **hp)
        method.begin_task(0)
        method.end_task(0, importance_data)
        stored[name] = method.stored_floats()
    n_params = sum(p.numel() for p in trunk.parameters())
    med = statistics.median
    return {
        "model": label,
        "trunk_parameters": n_params,
        "groups": ags.stored_floats(),
        "prox_over_adam_step": med(p / a for p, a in zip(prox, adam)),
        "prox_over_full_update": med(p / f for p, f in zip(prox, full)),
        "mask_over_adam_step": med(m / a for m, a in zip(masks, adam)),
        "minibatch": minibatch,
        "stored_floats": stored,
        "agscl_over_ewc_floats": stored["agscl"] / stored["ewc"],
        "agscl_over_mas_floats": stored["agscl"] / stored["mas"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--minibatch", type=int, default=256, help="observations per full PPO update step")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = [
        bench_model("nature (32/64/64, fc 512)", (32, 64, 64), 512, args.repeats, args.minibatch, device),
        bench_model("4x wide, authors' (128/256/128, fc 512)", (128, 256, 128), 512, args.repeats, args.minibatch, device),
    ]
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, repeats {args.repeats}")
    print(machine_line())
    header = f"{'model':42s} {'params':>9s} {'prox/adam.step':>15s} {'prox/full update':>17s} {'mask/adam.step':>15s} {'AGS/EWC floats':>15s} {'AGS/MAS floats':>15s}"
    print(header)
    for r in rows:
        print(
            f"{r['model']:42s} {r['trunk_parameters']:9d} {r['prox_over_adam_step']:15.3f} {r['prox_over_full_update']:17.4f} "
            f"{r['mask_over_adam_step']:15.3f} {r['agscl_over_ewc_floats']:15.2e} {r['agscl_over_mas_floats']:15.2e}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"regularizer_{device.type}.json"
    write_json_atomic(target, {"device": str(device), "torch": torch.__version__, "machine": machine(), "rows": rows})
    print(f"saved {target}")


if __name__ == "__main__":
    main()
