#!/usr/bin/env bash
# Install the trimmed FlashInfer bundle written by scripts/flashinfer_bundle.py, without network.
#
#   bash scripts/flashinfer_install.sh       installs, then prints the PYTHONPATH line to use
#   source scripts/flashinfer_install.sh     installs and exports PYTHONPATH in this shell
#
# The dependency wheels go to build/flashinfer-run/site (pip --target, --no-index), the trimmed
# package is extracted to build/flashinfer-run/pkg; both are put on PYTHONPATH (Python code calls
# flashinfer_env.activate(), which adds the same paths). The bundle folder itself stays as built,
# so it can be carried again. FLASHINFER_BUNDLE overrides the bundle folder, FLASHINFER_RUN the
# install folder, PYTHON the interpreter.

_fi_install() {
    local here bundle run py
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    bundle="${FLASHINFER_BUNDLE:-$here/build/flashinfer}"
    run="${FLASHINFER_RUN:-$here/build/flashinfer-run}"
    py="${PYTHON:-$(command -v python || command -v python3)}"
    if [ ! -f "$bundle/flashinfer.tar.xz" ]; then
        echo "no bundle at $bundle: run 'python scripts/flashinfer_bundle.py' on a machine with network" >&2
        return 1
    fi
    "$py" -m pip install --quiet --no-index --no-deps --disable-pip-version-check \
        --target "$run/site" --upgrade "$bundle"/wheels/*.whl || return 1
    rm -rf "$run/pkg" && mkdir -p "$run/pkg" && tar -xJf "$bundle/flashinfer.tar.xz" -C "$run/pkg" || return 1
    cp "$bundle/manifest.json" "$run/manifest.json"
    FLASHINFER_PYTHONPATH="$run/pkg:$run/site"
    echo "installed the trimmed flashinfer into $run/pkg (dependencies: $run/site)" >&2
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
