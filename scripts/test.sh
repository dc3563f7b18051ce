#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite.
#   bash scripts/test.sh            (extra arguments go to pytest, e.g. -k sampling)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -r requirements.txt -r requirements-test.txt
if ! command -v chromium >/dev/null 2>&1; then
  # Debian's chromium, for the real-browser tests (playwright's own browser download needs the internet)
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
# Every temporary file of the run stays in the repo's ignored test-artifacts/ (nothing is left in /tmp).
mkdir -p test-artifacts/tmp
export TMPDIR="$PWD/test-artifacts/tmp" GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1
exec python3 -m pytest "$@"
