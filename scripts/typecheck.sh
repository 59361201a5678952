#!/usr/bin/env bash
# mypy --strict and the import-linter contracts over the chaosbus packages. The repo maps import
# names onto folders (pyproject package-dir), which neither tool follows, so both check a tree of
# symlinks laid out as the packages import.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(pwd)/.venv/bin
tree=build/typecheck/chaosbus
rm -rf build/typecheck && mkdir -p "$tree"
ln -s ../../../libs/common "$tree/common"
ln -s ../../../cli "$tree/cli"
for s in watcher scheduler injector recorder dashboard authcallout; do ln -s "../../../services/$s" "$tree/$s"; done
cd build/typecheck
"$venv/mypy" --config-file ../../pyproject.toml -p chaosbus.common -p chaosbus.cli \
  -p chaosbus.watcher -p chaosbus.scheduler -p chaosbus.injector -p chaosbus.recorder -p chaosbus.dashboard -p chaosbus.authcallout
PYTHONPATH=. "$venv/lint-imports" --config ../../.importlinter --no-cache
