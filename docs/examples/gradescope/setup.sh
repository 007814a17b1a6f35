#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image.
#
# The autograder zip is unpacked in /autograder/source.  Besides this file,
# run_autograder and weights.json, put mechat in it, either way:
#   - a wheel:  python3 -m pip wheel --no-deps -w dist /path/to/mechat,
#               then add dist/mechat-*.whl to the zip;
#   - a copy of the repository, as the directory mechat/ (with its setup.py).
#
# The mechat test suite does not run this script (it installs system
# packages); run it once in Gradescope's "Test autograder" before a class
# depends on it.
set -euo pipefail

SOURCE=/autograder/source
VENV=/autograder/mechat-venv

# Python 3 from the distribution: mechat is pure standard library and needs
# nothing else.  If your students' servers need a compiler or a runtime
# (build-essential, openjdk-17-jdk-headless...), add it to this line.
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends python3 python3-venv

# mechat gets a virtual environment of its own: pip may not install into the
# system's Python on recent Ubuntu (PEP 668), and the python3 that students'
# servers run cannot import mechat, so no server can quietly be mechat's own.
python3 -m venv "$VENV"

shopt -s nullglob
wheels=("$SOURCE"/mechat-*.whl)
if ((${#wheels[@]} > 0)); then
  "$VENV/bin/python3" -m pip install --no-deps "${wheels[0]}"
else
  "$VENV/bin/python3" -m pip install --no-deps "$SOURCE/mechat"
fi

# Fail the build now, not at the first submission, if the kit cannot run.
"$VENV/bin/python3" -m mechat conform --list >/dev/null
