"""Shard functions for the worker-death tests: picklable, and importable by worker processes as `dying_shards` or
as `tests.dying_shards` (so this module imports nothing from the tests)."""

import ctypes
import os
import signal

from edgedistill.shards import ShardOutput


def shard_that_dies_on_4_and_7(jobs):
    if 4 in jobs:
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer does
    if 7 in jobs:
        ctypes.string_at(0)  # a segfault, as in a native TTS engine
    return ShardOutput(failures=[{"square": job * job} for job in jobs])


def shard_that_squares(jobs):
    return ShardOutput(failures=[{"square": job * job} for job in jobs])
