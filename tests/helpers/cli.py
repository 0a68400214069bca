"""Running the command line as a person does: a child process from the repository."""

import subprocess
import sys

from tests.conftest import REPO


def cli(*args, env=None, check=True):
    result = subprocess.run([sys.executable, "-m", "facetracker", *map(str, args)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"facetracker {args[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result
