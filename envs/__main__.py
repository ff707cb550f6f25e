"""``python -m envs --list [--backend ale]``: print the Atari game names and named sequences."""

from __future__ import annotations

import argparse
import sys

from envs.atari import BACKENDS, SEQUENCES, list_games


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m envs", description=__doc__)
    parser.add_argument("--list", action="store_true", help="print every game the backend can run")
    parser.add_argument("--backend", default="envpool", choices=BACKENDS)
    args = parser.parse_args(argv)
    if not args.list:
        parser.print_help()
        return 0
    for game in list_games(args.backend):
        print(game)
    for name, games in SEQUENCES.items():
        print(f"# sequence {name}: {' '.join(games)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
