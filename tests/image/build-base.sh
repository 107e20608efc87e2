#!/usr/bin/env bash
# Make a local stand-in for the Dockerfile's default base (python:3.11-slim-bookworm), since no
# container registry is reachable here: debootstrap a minimal Debian bookworm from Debian's
# packages, add a CPython 3.11 under /usr/local as that image has it, and `podman import` it.
# Debian's own python3.11 (3.11.2) cannot be used: NeMo unpacks .nemo files with tarfile's
# `filter=` argument, new in 3.11.4. The CPython comes from this machine (its standard library,
# not its site-packages), and the shared libraries its modules use come from Debian.
# Usage: tests/image/build-base.sh [IMAGE]   (default localhost/parakeet-base:bookworm)
set -euo pipefail
image="${1:-localhost/parakeet-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
python="${BASE_PYTHON:-python3.11}"

if podman image exists "$image"; then
  echo "base image $image exists"
  exit 0
fi
prefix="$("$python" -c 'import sys; assert sys.version_info[:2] == (3, 11) and sys.version_info >= (3, 11, 4), sys.version; print(sys.base_prefix)')"
root="$(mktemp -d /var/tmp/parakeet-base.XXXXXX)"
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase \
  --include=ca-certificates,libssl3,libffi8,libsqlite3-0,liblzma5,libbz2-1.0,zlib1g,libreadline8,libncursesw6,libuuid1,libgdbm6 \
  bookworm "$root" "$mirror"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
echo "deb $mirror bookworm main" > "$root/etc/apt/sources.list"

# CPython 3.11 into /usr/local: interpreter, libpython, headers, standard library.
install -D -m 0755 "$prefix/bin/python3.11" "$root/usr/local/bin/python3.11"
cp -a "$prefix"/lib/libpython3.11.so* "$root/usr/local/lib/"
cp -a "$prefix/include" "$root/usr/local/"
tar -C "$prefix/lib" --exclude='python3.11/site-packages/*' --exclude='__pycache__' --exclude='python3.11/test' \
  -c python3.11 | tar -C "$root/usr/local/lib" -x
for name in python3 python; do ln -sf python3.11 "$root/usr/local/bin/$name"; done
chroot "$root" /sbin/ldconfig
chroot "$root" /usr/local/bin/python3 -c 'import ssl, ctypes, sqlite3, lzma, bz2, zlib, venv, ensurepip, tarfile; tarfile.data_filter'

tar -C "$root" -c . | podman import \
  --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' --change 'ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  - "$image"
echo "built base image $image ($("$python" --version) under /usr/local)"
