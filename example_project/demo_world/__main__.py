"""python -m demo_world --scenario NAME

Prints one JSON line describing the world, then serves until stdin reaches
EOF (the parent closed it or died) or SIGTERM/SIGINT; prints the final
snapshot as one more JSON line. While serving, stdin lines "snapshot" and
"reset" print a snapshot / zero the counters, so a parent can poll.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from types import FrameType

from .scenarios import SCENARIOS, build
from .world import World


def _emit(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def _read_commands(world: World, done: threading.Event, lock: threading.Lock) -> None:
    for line in sys.stdin:
        command = line.strip()
        with lock:
            if command == "snapshot":
                _emit(world.snapshot())
            elif command == "reset":
                world.reset_counters()
                _emit({"reset": True})
    done.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo_world", description=__doc__)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="demo")
    parser.add_argument(
        "--ignore-stdin",
        action="store_true",
        help="do not stop at stdin EOF (for runs without a stdin, e.g. CI)",
    )
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    args = parser.parse_args(argv)

    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    world = build(args.scenario)
    world.start()
    lock = threading.Lock()  # keeps command replies and the final line whole
    try:
        _emit(world.describe())
        if not args.ignore_stdin:
            threading.Thread(target=_read_commands, args=(world, done, lock), daemon=True).start()
        # Polling wait: signal handlers run in the main thread between waits.
        waited = 0.0
        while not done.wait(0.2):
            waited += 0.2
            if args.seconds is not None and waited >= args.seconds:
                break
        with lock:
            _emit(world.snapshot())
    finally:
        world.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
