"""``memcore run --nproc N`` starts its processes here: ``torch.distributed.run`` with the same
arguments, but a failed process ends the launch with that process's exit status instead of the
launcher's traceback (each process has already printed its own one-line error)."""
from __future__ import annotations

import logging
import sys


def main(argv: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(get_args_parser().parse_args(argv))
    except ChildFailedError as exc:
        codes = [failure.exitcode for failure in exc.failures.values()]
        # A process killed by a signal reports -signum; the shell's convention is 128 + signum.
        return next((c for c in codes if c > 0), 128 - min(codes, default=-1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
