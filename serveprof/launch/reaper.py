"""Removes a server's cgroups once its launcher is gone, however it went.

``python -m serveprof.launch.reaper DIR...`` blocks reading its stdin, a pipe whose
only writer is the launcher. The launcher normally removes the groups itself and then
closes the pipe; if it is killed outright (SIGKILL, the OOM killer), the kernel closes
the pipe for it and kills its server (PR_SET_PDEATHSIG, serveprof/launch/process.py).
Either way the read ends, and the reaper waits for the groups to empty, kills anything
left in them, and removes them. It runs in a session of its own, so a signal to the
launcher's process group does not stop it, and it ends as soon as the groups are gone.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from serveprof.launch.cgroups import remove_directories

WAIT_S = 30.0


def main(argv: list[str]) -> int:
    paths = [Path(arg) for arg in argv]
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    left = remove_directories(paths, wait_s=WAIT_S)
    for path in left:
        print(f"serveprof reaper: could not remove cgroup {path}", file=sys.stderr)
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
