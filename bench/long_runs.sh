#!/usr/bin/env bash
# The long MinAtar benchmark runs of issues 25-27, on a fixed snapshot of the code, resumable.
#
#     bash bench/long_runs.sh width1   # five games at width 1 (finetune, packnet, then the plasticity rows),
#                                      # then the 3-game packnet sweep
#     bash bench/long_runs.sh wide     # five games at twice the width (issue 26)
#     bash bench/long_runs.sh wide3    # its seed 3 from the other end, on a second core beside `wide`
#     bash bench/long_runs.sh plasticity  # five games: the plasticity rows (issue 27), beside width1's finetune
#     bash bench/long_runs.sh ln_control 1 2 3  # fine-tuning with --layer-norm (seeds given), the control of shrink_perturb_ln
#     bash bench/long_runs.sh keep     # copy every finished run's results.json into docs/results/<stem>_runs/
#     bash bench/long_runs.sh tables   # every five-game table (and the 3-game PackNet one) from those files
#                                      # (and the drift tables from the checkpoints in $RUNS, where they are)
#
# Each queue is a list of bench/continual_minatar.py commands (ln_control: agent runs) run one
# after the other on one core (--engine sequential, --torch-threads 1). Started again, every command skips its finished
# runs and resumes its interrupted ones from their checkpoints (the sweep's own resume), so the
# same line resumes a queue after any stop. The code is the snapshot SNAPSHOT (a git worktree in
# $SNAPSHOT_DIR, created here if missing): later commits on main do not change runs in flight.
# Runs and logs go to $RUNS (default /work/bench_runs). Each finished run's results.json is
# committed under docs/results/<stem>_runs/<trial>/ (by hand, as runs finish); on a machine
# without the runs directory, those files are put back first (a trial whose results.json says
# finished is skipped by the sweep and read by the aggregate), so only unfinished runs train again.
set -euo pipefail
queue=${1:?usage: bash bench/long_runs.sh width1|wide|wide3|plasticity|ln_control|keep|tables}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ "$queue" = plasticity ]; then  # the plasticity methods landed after the other queues' snapshot
    SNAPSHOT=${SNAPSHOT:-330415b}
    SNAPSHOT_DIR=${SNAPSHOT_DIR:-$(dirname "$ROOT")/bench_snapshot_plasticity}
else
    SNAPSHOT=${SNAPSHOT:-2108d2b}
    SNAPSHOT_DIR=${SNAPSHOT_DIR:-$(dirname "$ROOT")/bench_snapshot}
fi
RUNS=${RUNS:-$(dirname "$ROOT")/bench_runs}
case "$queue" in  # the two queues that read and write only this checkout
    keep)
        for pair in continual_minatar5_current continual_minatar_packnet continual_minatar5_wide; do
            for run in "$RUNS/$pair"/*/; do
                [ -f "$run/results.json" ] || continue
                grep -q '"status": "finished"' "$run/results.json" || continue
                mkdir -p "$ROOT/docs/results/${pair}_runs/$(basename "$run")"
                cp "$run/results.json" "$ROOT/docs/results/${pair}_runs/$(basename "$run")/"
            done
        done
        exit 0
        ;;
    tables)  # a run not finished (or not there) is left out with one line, so a partial grid gives a partial table
        cd "$ROOT"
        C=docs/results/continual_minatar5_current_runs  # fine-tuning, packnet (2108d2b) and the plasticity rows (330415b)
        O=docs/results/continual_minatar5_runs           # the first grid: packnet 2eb911e, the others 1113185
        W=docs/results/continual_minatar5_wide_runs      # the wide trunk (2108d2b)
        dirs=(); labels=()
        add() {  # add DIR LABEL METHOD...: seeds 1-3 of each METHOD's runs in DIR, labelled LABEL (METHOD if empty)
            local dir=$1 label=$2 method seed; shift 2
            for method in "$@"; do
                for seed in 1 2 3; do dirs+=("$dir/${method}_seed$seed"); labels+=("${label:-$method}"); done
            done
        }
        add $C "" finetune packnet
        add $O packnet_before_fix packnet
        add $O "" ewc mas agscl_mu4 agscl_mu4_no_reinit
        .venv/bin/python -m reporting.aggregate "${dirs[@]}" --labels "${labels[@]}" --out-dir docs/results \
            --name continual_minatar5 --improver agscl_mu4
        # continual_minatar5_before_packnet_fix.* stays as computed then (before issue 25's noise rule)
        dirs=(); labels=()
        add docs/results/continual_minatar_packnet_runs "" finetune packnet  # three games (issue 25's PackNet sweep)
        .venv/bin/python -m reporting.aggregate "${dirs[@]}" --labels "${labels[@]}" --out-dir docs/results \
            --name continual_minatar_packnet --improver packnet
        dirs=(); labels=()
        add $C "" finetune redo shrink_perturb l2init agscl_mu4_redo shrink_perturb_ln finetune_ln packnet
        add $O "" agscl_mu4 ewc mas
        .venv/bin/python -m reporting.aggregate "${dirs[@]}" --labels "${labels[@]}" --out-dir docs/results \
            --name continual_minatar5_plasticity --reference finetune --improver agscl_mu4_redo --against agscl_mu4 packnet
        dirs=(); labels=()
        add $C "" finetune packnet
        add $O "" ewc mas agscl_mu4
        for method in finetune ewc mas agscl_mu4 packnet; do add $W "${method}_wide" "$method"; done
        .venv/bin/python -m reporting.aggregate "${dirs[@]}" --labels "${labels[@]}" --out-dir docs/results \
            --name continual_minatar5_wide --reference finetune --improver agscl_mu4_wide
        for pair in "continual_minatar5_current continual_minatar5_plasticity_drift" \
                    "continual_minatar5_wide continual_minatar5_wide_drift"; do
            read -r sweep out <<< "$pair"
            finished=("$RUNS/$sweep"/*/ckpt/game4.pt)
            [ -e "${finished[0]}" ] || { echo "no checkpoints in $RUNS/$sweep: no drift table" >&2; continue; }
            .venv/bin/python -m reporting.drift "${finished[@]%/ckpt/game4.pt}" --out "docs/results/$out.md"
        done
        exit 0
        ;;
esac
if [ ! -d "$SNAPSHOT_DIR" ]; then
    git -C "$ROOT" worktree add --detach "$SNAPSHOT_DIR" "$SNAPSHOT"
fi
[ -e "$SNAPSHOT_DIR/.venv" ] || ln -s "$ROOT/.venv" "$SNAPSHOT_DIR/.venv"
cd "$SNAPSHOT_DIR"
export PYTHONPATH="$SNAPSHOT_DIR"  # the snapshot's packages, not the editable install of main
bench() { nice -n 10 .venv/bin/python bench/continual_minatar.py --engine sequential --out-dir "$RUNS/out" "$@"; }
restore() {  # restore STEM RUNS_DIR: the committed finished runs of docs/results/STEM_runs, where missing
    local run
    for run in "$ROOT/docs/results/$1_runs"/*/; do
        [ -f "$run/results.json" ] && [ ! -e "$2/$(basename "$run")" ] || continue
        mkdir -p "$2/$(basename "$run")" && cp "$run/results.json" "$2/$(basename "$run")/"
    done
}
case "$queue" in
    width1)
        restore continual_minatar5_current "$RUNS/continual_minatar5_current"
        restore continual_minatar_packnet "$RUNS/continual_minatar_packnet"
        bench --sequence all --methods finetune packnet --runs-dir "$RUNS/continual_minatar5_current" \
            --name continual_minatar5_current
        bench --methods finetune packnet --runs-dir "$RUNS/continual_minatar_packnet" --name continual_minatar_packnet
        ;;
    wide)  # seed 1 of every method first, so that a partial grid already compares the methods
        restore continual_minatar5_wide "$RUNS/continual_minatar5_wide"
        for seeds in "1" "1 2" "1 2 3"; do
            # shellcheck disable=SC2086
            bench --sequence all --trunk wide --seeds $seeds --runs-dir "$RUNS/continual_minatar5_wide" \
                || [ "$seeds" != "1 2 3" ]  # a one- or two-seed table may be refused; the full grid must not
        done
        ;;
    wide3)  # a second worker beside `wide` on a second core, started once `wide` has begun seed 3: seed 3,
            # methods in reverse order, so the two meet at the end. The sweep runs fine-tuning first: wait
            # while `wide` trains it (its lock). A trial the other worker is still running when this one
            # reaches it fails here after the sweep's 120 s lock wait; the other worker finishes it.
        restore continual_minatar5_wide "$RUNS/continual_minatar5_wide"
        mkdir -p "$RUNS/continual_minatar5_wide/logs"
        flock "$RUNS/continual_minatar5_wide/logs/finetune_seed3.lock" true
        bench --sequence all --trunk wide --seeds 3 --methods packnet agscl_mu4 mas ewc finetune \
            --runs-dir "$RUNS/continual_minatar5_wide" --name continual_minatar5_wide_seed3 \
            || echo "wide3: the seed-3 sweep ended with an error (or refused its one-seed table)" >&2
        for method in finetune ewc mas agscl_mu4 packnet; do
            grep -qs '"status": "finished"' "$RUNS/continual_minatar5_wide/${method}_seed3/results.json" \
                || echo "wide3: ${method}_seed3 is not finished: run \`bash bench/long_runs.sh wide\`" >&2
        done
        ;;
    ln_control)  # bash bench/long_runs.sh ln_control SEED...: fine-tuning with --layer-norm, the control that
                 # separates LayerNorm's part of shrink_perturb_ln from shrink-and-perturb's (added after the rows;
                 # on 2108d2b, the code of the fine-tuning reference)
        shift
        [ $# -gt 0 ] || { echo "usage: bash bench/long_runs.sh ln_control SEED..." >&2; exit 2; }
        restore continual_minatar5_current "$RUNS/continual_minatar5_current"
        for seed in "$@"; do
            dir="$RUNS/continual_minatar5_current/finetune_ln_seed$seed"
            if grep -qs '"status": "finished"' "$dir/results.json"; then continue; fi
            if [ -d "$dir" ]; then  # from its checkpoint, or from its stored config where it has none
                nice -n 10 .venv/bin/python -m agents.ppo_continual --resume "$dir"
            else
                nice -n 10 .venv/bin/python -m agents.ppo_continual --suite minatar \
                    --games Breakout SpaceInvaders Freeway Asterix Seaquest \
                    --steps-per-game 300000 300000 300000 1500000 300000 --eval-every 0 --eval-episodes 30 \
                    --random-episodes 30 --eval-envs 16 --torch-threads 1 --bf16 off --layer-norm \
                    --method finetune --seed "$seed" --run-name "finetune_ln_seed$seed" \
                    --runs-dir "$RUNS/continual_minatar5_current"
            fi
        done
        ;;
    plasticity)  # the same runs directory as width1: its finetune runs are skipped, the reference of every row
        restore continual_minatar5_current "$RUNS/continual_minatar5_current"
        bench --sequence all --methods finetune redo shrink_perturb l2init agscl_mu4_redo shrink_perturb_ln             --runs-dir "$RUNS/continual_minatar5_current" --name continual_minatar5_plasticity
        ;;
    *) echo "long_runs.sh: unknown queue $queue: choose width1, wide, wide3, plasticity, ln_control, keep or tables" >&2; exit 2 ;;
esac
