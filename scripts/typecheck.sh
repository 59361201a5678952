#!/usr/bin/env bash
# mypy --strict over the chaosbus packages. The repo maps import names onto folders (pyproject
# package-dir), which mypy cannot follow, so it checks a tree of symlinks with the import layout.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=build/typecheck/chaosbus
rm -rf build/typecheck && mkdir -p "$tree"
ln -s ../../../libs/common "$tree/common"
ln -s ../../../cli "$tree/cli"
for s in watcher scheduler injector recorder; do ln -s "../../../services/$s" "$tree/$s"; done
cd build/typecheck
exec "${MYPY:-../../.venv/bin/mypy}" --config-file ../../pyproject.toml -p chaosbus.common -p chaosbus.cli \
  -p chaosbus.watcher -p chaosbus.scheduler -p chaosbus.injector -p chaosbus.recorder
