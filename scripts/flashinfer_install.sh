#!/usr/bin/env bash
# Install the trimmed FlashInfer bundle written by scripts/flashinfer_bundle.py, without network.
#
#   bash scripts/flashinfer_install.sh       installs, then prints the PYTHONPATH line to use
#   source scripts/flashinfer_install.sh     installs and exports PYTHONPATH in this shell
#
# The dependency wheels go to build/flashinfer/site (pip --target, --no-index), the trimmed package
# is extracted to build/flashinfer/pkg; both are put on PYTHONPATH. Python code can instead call
# flashinfer_env.activate() (scripts/flashinfer_env.py), which does the same without the shell.
# FLASHINFER_BUNDLE overrides the bundle folder, PYTHON the interpreter.

_fi_install() {
    local here bundle py
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    bundle="${FLASHINFER_BUNDLE:-$here/build/flashinfer}"
    py="${PYTHON:-$(command -v python || command -v python3)}"
    if [ ! -f "$bundle/flashinfer.tar.xz" ]; then
        echo "no bundle at $bundle: run 'python scripts/flashinfer_bundle.py' on a machine with network" >&2
        return 1
    fi
    "$py" -m pip install --quiet --no-index --no-deps --disable-pip-version-check \
        --target "$bundle/site" --upgrade "$bundle"/wheels/*.whl || return 1
    rm -rf "$bundle/pkg" && mkdir -p "$bundle/pkg" && tar -xJf "$bundle/flashinfer.tar.xz" -C "$bundle/pkg" || return 1
    FLASHINFER_PYTHONPATH="$bundle/pkg:$bundle/site"
    echo "installed the trimmed flashinfer into $bundle/pkg (dependencies: $bundle/site)" >&2
}

if _fi_install; then
    if [ "${BASH_SOURCE[0]}" != "$0" ]; then
        export PYTHONPATH="$FLASHINFER_PYTHONPATH${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "export PYTHONPATH=$FLASHINFER_PYTHONPATH\${PYTHONPATH:+:\$PYTHONPATH}"
    fi
else
    [ "${BASH_SOURCE[0]}" != "$0" ] && return 1 || exit 1
fi
