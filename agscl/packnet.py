"""PackNet (Mallya & Lazebnik, CVPR 2018), as Continual World runs it for continual RL.

Each trunk weight has an owner: no task yet (free), or the task that kept it. A task trains
every free weight (the weights of earlier tasks are used but frozen); when its retraining phase
begins (the last ``retrain_fraction`` of its steps or epochs) the learner calls
:meth:`PackNet.prune`, which keeps the largest-magnitude ``keep`` fraction of the free weights
that the task trained (those that received a non-zero gradient during the task), per layer, and
sets the others exactly to 0; the learner resets its optimizer and retrains the
kept weights while the pruned ones stay 0. At :meth:`end_task` the kept weights become the
task's own and are bit-exact from then on: :meth:`after_step` writes them back after every
optimizer step (and their gradients are zeroed first, so they take no share of gradient
clipping), so neither the gradient nor Adam's momentum can move them. The default ``keep`` is
``1 / (tasks left + 1)`` (Continual World's rule): with N tasks each gets about 1/N of the trunk,
and the last task keeps everything that is still free. The last task never prunes, whatever
``keep`` says (Continual World's rule too): capacity it gave up could serve no later task.

Only trained weights compete for a task's share. A weight whose gradient was exactly 0 at every
step of a task (a MinAtar game fills only its leading input channels of the shared ten, so the
first convolution's weights on the others never train) still holds its initial value; ranked by
magnitude beside trained weights it would often be kept, freezing a random value on a channel a
later game needs. Such weights stay free (and are set to 0 with the other weights the task
does not keep), so the next task trains them.

Evaluation of task j (:meth:`use_task`) reads only the weights owned by tasks 0..j (all others
as 0), so later tasks cannot change an earlier task's function; the task being trained also
reads the free weights.

Biases (and any other trunk parameter with fewer than 2 dimensions) are not split between
tasks: they are trained by the first task only and frozen after it, as in Continual World. A
bias is shared by every weight of its unit, so there is no per-task share of it to keep; letting
later tasks move it would change the earlier tasks' outputs.

Memory: one uint8 owner per weight (``stored_bytes``), against AGS-CL's one float per node and
EWC's one float per weight; up to 254 tasks. The copy of the frozen values that
:meth:`after_step` restores from (``anchor_floats``) is rebuilt from the trunk at every
:meth:`begin_task` and is not part of the state.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import nn

from agscl.base import ContinualMethod, HeadSpec, Hparam, module_device

FREE = 0
MAX_TASKS = 254


class PackNet(ContinualMethod):
    """Per-weight task ownership by magnitude pruning; see the module docstring.

    Args:
        num_tasks: how many tasks the run has (the default keep-fraction depends on the tasks left).
        keep: fraction of the free weights each task keeps at pruning, in (0, 1]; 0 (default):
            ``1 / (num_tasks - task)``.
        retrain_fraction: the last fraction of each task's budget spent retraining after pruning
            (read by the learners, which call :meth:`prune` when that phase begins).
    """

    name = "packnet"
    state_keys = ("hparams", "names", "owner", "pruned_task", "trained")
    hparams = (
        Hparam("keep", 0.0, "fraction of the free trunk weights a task keeps at pruning (0: 1/(tasks left + 1))",
               low=0.0, high=1.0),
        Hparam("retrain_fraction", 0.2, "last fraction of each task's steps (epochs) spent retraining after pruning",
               low=0.0, high=1.0, high_open=True),
    )

    def __init__(self, trunk: nn.Module, heads: Sequence[HeadSpec], *, num_tasks: int, keep: float = 0.0,
                 retrain_fraction: float = 0.2) -> None:
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or not 1 <= num_tasks <= MAX_TASKS:
            raise ValueError(f"num_tasks={num_tasks!r} is out of range: allowed num_tasks an integer in [1, {MAX_TASKS}]")
        for spec, value in zip(self.hparams, (keep, retrain_fraction)):
            spec.check(value)
        norms = [name for name, m in trunk.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if norms:
            raise ValueError(f"the trunk has BatchNorm layers ({', '.join(norms)}): their running statistics would "
                             "keep changing with later tasks, so PackNet could not keep a task's function; use a trunk "
                             "without BatchNorm")
        super().__init__(trunk, heads)
        self.num_tasks, self.keep, self.retrain_fraction = int(num_tasks), float(keep), float(retrain_fraction)
        named = [(n, p) for n, p in trunk.named_parameters() if p.requires_grad]
        self.names = [n for n, p in named if p.dim() >= 2]
        self.shared_names = [n for n, p in named if p.dim() < 2]
        if not self.names:
            raise ValueError("the trunk has no weight matrices or filters for PackNet to split between tasks")
        device = module_device(trunk)
        self.owner = [torch.zeros(p.shape, dtype=torch.uint8, device=device) for n, p in named if p.dim() >= 2]
        #: per weight: received a non-zero gradient since the current task began (prune's candidates)
        self.trained = [torch.zeros(p.shape, dtype=torch.bool, device=device) for n, p in named if p.dim() >= 2]
        self._trained_of = dict(zip(self.names, self.trained))
        self.pruned_task: int | None = None  # the task whose pruning happened and whose end has not come yet
        self._fixed: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None  # name -> (mask, values)
        self._handles = [p.register_hook(self._grad_hook(n)) for n, p in named]

    # -- plumbing --------------------------------------------------------------------------
    def _params(self) -> dict[str, nn.Parameter]:
        return dict(self.trunk.named_parameters())

    def _grad_hook(self, name: str):
        def hook(grad: torch.Tensor) -> torch.Tensor:
            fixed = None if self._fixed is None else self._fixed.get(name)
            if fixed is not None:
                grad = grad.masked_fill(fixed[0], 0.0)
            trained = self._trained_of.get(name)
            if trained is not None:
                trained.logical_or_(grad != 0)
            return grad
        return hook

    def keep_fraction(self, task: int) -> float:
        """The fraction of the free weights ``task`` keeps: ``keep``, or ``1/(tasks left + 1)``."""
        if not 0 <= task < self.num_tasks:
            raise ValueError(f"task {task} is out of range: PackNet was built for num_tasks={self.num_tasks} (ids 0..{self.num_tasks - 1})")
        if task == self.num_tasks - 1:
            return 1.0  # the last task never prunes: nothing after it could use what it gave up
        return self.keep if self.keep > 0 else 1.0 / (self.num_tasks - task)

    @torch.no_grad()
    def _refresh_fixed(self) -> None:
        """What :meth:`after_step` holds in place during the current task: weights of earlier
        tasks at their values, pruned weights at 0, biases after the first task."""
        task = self.task if self.task is not None else self.tasks_learned
        params = self._params()
        fixed: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, owner in zip(self.names, self.owner):
            earlier = (owner != FREE) & (owner <= task)
            mask = earlier | (owner == FREE) if self.pruned_task == task else earlier
            if bool(mask.any()):
                p = params[name]
                fixed[name] = (mask, torch.where(earlier, p.detach(), torch.zeros_like(p)))
        if self.tasks_learned >= 1:
            for name in self.shared_names:
                p = params[name]
                fixed[name] = (torch.ones_like(p, dtype=torch.bool), p.detach().clone())
        self._fixed = fixed

    # -- hooks -----------------------------------------------------------------------------
    def begin_task(self, task: int) -> None:
        self.keep_fraction(task)  # range check
        if task != self.task:  # a resumed run re-enters its task with what it trained so far
            for trained in self.trained:
                trained.zero_()
        super().begin_task(task)
        self._refresh_fixed()

    @torch.no_grad()
    def after_step(self, lr: float) -> None:
        if self._fixed is None:
            self._refresh_fixed()
        assert self._fixed is not None
        params = self._params()
        for name, (mask, values) in self._fixed.items():
            p = params[name]
            p.copy_(torch.where(mask, values, p))

    @torch.no_grad()
    def prune(self, task: int) -> None:
        """Keep the largest-magnitude :meth:`keep_fraction` of each layer's free weights that the
        task trained (exactly ``round(fraction * trained free)`` of them) for ``task`` and set the
        other free weights exactly to 0 (they stay free). Called by
        the learner when the retraining phase begins (then it resets its optimizer); a second
        call for the same task does nothing, so a resumed run may call it again."""
        if self.pruned_task == task:
            return
        if self.pruned_task is not None:
            raise RuntimeError(f"prune({task}) while task {self.pruned_task} is pruned and not ended")
        fraction = self.keep_fraction(task)
        params = self._params()
        for name, owner, trained in zip(self.names, self.owner, self.trained):
            p = params[name]
            free = (owner == FREE) & trained
            free_index = free.reshape(-1).nonzero().squeeze(1)
            count = int(round(fraction * free_index.numel()))
            magnitude = p.detach().abs().reshape(-1)[free_index]
            kept_index = free_index[torch.topk(magnitude, count, sorted=False).indices]
            owner.view(-1)[kept_index] = task + 1
            p.masked_fill_(owner == FREE, 0.0)  # the pruned weights (no earlier task owns a free weight)
        self.pruned_task = task
        self._refresh_fixed()

    def end_task(self, task: int, inputs: Iterable[Any]) -> None:
        """The kept weights become ``task``'s own (a learner that never called :meth:`prune`
        gets it here, without retraining); biases freeze after the first task."""
        if self.pruned_task != task:
            self.prune(task)
        self.pruned_task = None
        super().end_task(task, inputs)
        self._refresh_fixed()

    @contextlib.contextmanager
    def use_task(self, task: int) -> Iterator[None]:
        """Inside the block the trunk reads only the weights of tasks 0..``task`` (a task not
        learned yet also reads the free weights); every weight is restored bit-exactly after."""
        if not 0 <= task < self.num_tasks:
            raise ValueError(f"task {task} is out of range: valid task ids are 0..{self.num_tasks - 1}")
        params = self._params()
        saved: list[tuple[nn.Parameter, torch.Tensor]] = []
        with torch.no_grad():
            for name, owner in zip(self.names, self.owner):
                visible = (owner != FREE) & (owner <= task + 1)
                if task >= self.tasks_learned:
                    visible |= owner == FREE
                if not bool(visible.all()):
                    p = params[name]
                    saved.append((p, p.detach().clone()))
                    p.masked_fill_(~visible, 0.0)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, value in saved:
                    p.copy_(value)

    # -- what a composed plasticity method must leave alone (agscl/compose.py) ---------------
    @torch.no_grad()
    def protected(self) -> dict[torch.Tensor, torch.Tensor]:
        """Per parameter, True where no plasticity method may write: every owned weight (earlier
        tasks' and, once pruned, the current task's kept ones), every weight during the
        retraining phase (the pruned ones are held at 0 until the task ends), the biases once
        the first task is learned (they are frozen), and the heads of learned tasks other than
        the current one."""
        params = self._params()
        retraining = self.pruned_task is not None and self.pruned_task == self.task
        masks: dict[torch.Tensor, torch.Tensor] = {}
        for name, owner in zip(self.names, self.owner):
            masks[params[name]] = torch.ones_like(owner, dtype=torch.bool) if retraining else owner != FREE
        for name in self.shared_names:
            p = params[name]
            masks[p] = torch.full_like(p, self.tasks_learned >= 1, dtype=torch.bool)
        masks.update(self.learned_heads_mask())
        return masks

    # -- bookkeeping -----------------------------------------------------------------------
    def stored_bytes(self) -> int:
        """Bytes of the owner map: one uint8 per regularized weight."""
        return sum(o.numel() * o.element_size() for o in self.owner)

    def statistics(self) -> dict[str, float]:
        total = sum(o.numel() for o in self.owner)
        stats = {
            "stored_floats": 0.0,
            "stored_bytes": float(self.stored_bytes()),
            "anchor_floats": float(sum(v.numel() for _, v in (self._fixed or {}).values())),
            "free_fraction": sum(int((o == FREE).sum()) for o in self.owner) / total,
        }
        learned = self.tasks_learned + (1 if self.pruned_task is not None and self.pruned_task >= self.tasks_learned else 0)
        for k in range(learned):
            stats[f"owned_fraction_task{k}"] = sum(int((o == k + 1).sum()) for o in self.owner) / total
        return stats

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(hparams={"num_tasks": self.num_tasks, "keep": self.keep, "retrain_fraction": self.retrain_fraction},
                     names=list(self.names), owner=[o.clone() for o in self.owner], pruned_task=self.pruned_task,
                     trained=[t.clone() for t in self.trained])
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load after the trunk's own weights (``begin_task`` re-reads the frozen values)."""
        super().load_state_dict(state)
        if list(state["names"]) != self.names or any(o.shape != s.shape for o, s in zip(self.owner, state["owner"])):
            raise ValueError("the PackNet state's owner map does not fit this trunk's weights")
        for key, value in state["hparams"].items():
            setattr(self, key, value)
        device = module_device(self.trunk)
        self.owner = [o.to(device=device, dtype=torch.uint8).clone() for o in state["owner"]]
        self.pruned_task = state["pruned_task"]
        # a state saved before ``trained`` was kept: every weight counts as trained (the old rule)
        saved = state.get("trained") or [torch.ones_like(o, dtype=torch.bool) for o in self.owner]
        self.trained = [t.to(device=device, dtype=torch.bool).clone() for t in saved]
        self._trained_of = dict(zip(self.names, self.trained))
        self._refresh_fixed()
