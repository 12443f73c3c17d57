"""A real, tiny file system for full-disk tests: a 512 KB tmpfs in a private mount namespace.

The child program runs inside ``unshare --mount`` (as root) or ``unshare --user
--map-root-user --mount`` (as anyone, where the kernel allows user namespaces), so the
mount is seen by that child alone and vanishes with it. When neither works the test fails
and says what it needs: a skipped full-disk test would check nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SIZE = "512k"


def tmpfs_command(mount: Path) -> list[str]:
    """The words that run ``sh -c SCRIPT sh MOUNT ARGS...`` in a private mount namespace,
    after a check that a tmpfs can be mounted at ``mount`` there (a directory).

    The script is expected to start with ``mount -t tmpfs -o size=512k tmpfs "$1"``
    (:func:`mount_then`)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("this test needs unshare(1) (util-linux) to mount a private tmpfs")
    options = ["--mount"] if os.geteuid() == 0 else ["--user", "--map-root-user", "--mount"]
    command = [unshare, *options, "--propagation", "private", "sh", "-c"]
    probe = subprocess.run(
        [*command, mount_then("true"), "sh", str(mount)], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.fail(
            "this test mounts a 512 KB tmpfs in a private mount namespace and could not: "
            f"{probe.stderr.strip()} (run it as root, or allow unprivileged user namespaces: "
            "sysctl kernel.unprivileged_userns_clone=1)"
        )
    return command


def mount_then(script: str) -> str:
    """A shell script that mounts the tmpfs at ``$1``, then runs ``script``."""
    return f'mount -t tmpfs -o size={SIZE} tmpfs "$1" && {script}'
