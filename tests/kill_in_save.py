"""Runs ``jaxvae`` (the arguments after this script's) and SIGKILLs itself at a chosen point inside Orbax's
asynchronous save of the N-th checkpoint, for the kill-during-save tests of tests/test_concurrency.py.

Environment: ``JAXVAE_TEST_KILL_POINT`` is one of
  create   the save's temporary step folder exists, nothing written into it yet;
  item     the arrays are written, the item folder ("default") not yet renamed into place;
  commit   the step folder is complete with its commit marker, not yet renamed to its final name;
  renamed  just after that rename (the checkpoint is complete; the run dies before its next step);
and ``JAXVAE_TEST_KILL_AT_SAVE`` the 1-based index of the save to kill (counted within this process).
"""

import os
import signal
import sys
from pathlib import Path

from orbax.checkpoint._src.path import async_path, atomicity

POINT = os.environ["JAXVAE_TEST_KILL_POINT"]
NTH = int(os.environ["JAXVAE_TEST_KILL_AT_SAVE"])
_saves = [0]


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


_create = atomicity.AtomicRenameTemporaryPath.create


async def _create_then_maybe_die(self):
    path = await _create(self)
    if self.get_final().name.isdigit():  # the step folder (items are named, e.g. "default")
        _saves[0] += 1
        if POINT == "create" and _saves[0] == NTH:
            _die()
    return path


_rename = async_path.rename


async def _rename_around_kill(src, dst):
    if _saves[0] != NTH:
        return await _rename(src, dst)
    step_folder = Path(str(dst)).name.isdigit()
    if (POINT == "item" and not step_folder) or (POINT == "commit" and step_folder):
        _die()
    result = await _rename(src, dst)
    if POINT == "renamed" and step_folder:
        _die()
    return result


atomicity.AtomicRenameTemporaryPath.create = _create_then_maybe_die
async_path.rename = _rename_around_kill

if __name__ == "__main__":
    from jaxvae.cli import main

    sys.argv = ["jaxvae", *sys.argv[1:]]
    sys.exit(main())
