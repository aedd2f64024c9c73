#!/usr/bin/env bash
# Build BVLC Caffe CPU-only against the system OpenBLAS, for bench/bench_core.py --caffe.
#
#     bench/caffe/build_caffe.sh CAFFE_SOURCE_DIR [BUILD_DIR]
#
# CAFFE_SOURCE_DIR is a checkout of https://github.com/BVLC/caffe that you provide (this
# repository holds none of Caffe's code); BUILD_DIR defaults to CAFFE_SOURCE_DIR/build and
# must lie outside this repository. Prints the path of the `caffe` binary when done.
#
# Debian 12 packages it needs (the script checks and names the missing ones):
#   cmake protobuf-compiler libprotobuf-dev libgoogle-glog-dev libgflags-dev libhdf5-dev
#   libopenblas-dev libboost-system-dev libboost-thread-dev libboost-filesystem-dev
# libopenblas-dev makes OpenBLAS the system libblas.so.3 (Spark MLlib then loads it too).
#
# Environment: CMAKE (a CMake 3.x; CMake 4 refuses Caffe's CMakeLists, default: the first
# 3.x among /usr/bin/cmake and `cmake` on PATH), JOBS (make's parallel jobs, default 2).
set -euo pipefail

die() { echo "build_caffe.sh: $*" >&2; exit 1; }

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: build_caffe.sh CAFFE_SOURCE_DIR [BUILD_DIR]"
src=$(cd "$1" 2>/dev/null && pwd) || die "no such directory: $1"
io_cpp="$src/src/caffe/util/io.cpp"
[ -f "$src/CMakeLists.txt" ] && [ -f "$io_cpp" ] && [ -f "$src/tools/caffe.cpp" ] \
    || die "$src does not look like a BVLC/caffe source tree (no CMakeLists.txt, src/caffe/util/io.cpp, tools/caffe.cpp)"
build=$(realpath -m "${2:-$src/build}")
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
case "$build/" in
    "$repo"/*) die "build directory $build is inside this repository ($repo): choose one outside it" ;;
esac

missing=()
for pkg in protobuf-compiler libprotobuf-dev libgoogle-glog-dev libgflags-dev libhdf5-dev \
           libopenblas-dev libboost-system-dev libboost-thread-dev libboost-filesystem-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] || die "missing Debian packages; install them with:
    apt-get install -y ${missing[*]}"

cmake_bin=${CMAKE:-}
if [ -z "$cmake_bin" ]; then
    for candidate in /usr/bin/cmake "$(command -v cmake || true)"; do
        [ -x "$candidate" ] || continue
        if "$candidate" --version | head -1 | grep -q ' 3\.'; then cmake_bin=$candidate; break; fi
    done
fi
[ -n "$cmake_bin" ] || die "no CMake 3.x found (CMake 4 refuses Caffe's CMakeLists): apt-get install cmake, or set CMAKE"
"$cmake_bin" --version | head -1 | grep -q ' 3\.' \
    || die "$cmake_bin is not CMake 3.x ($("$cmake_bin" --version | head -1)); CMake 4 refuses Caffe's CMakeLists"

# protobuf >= 3.20 (Debian 12 has 3.21) dropped the two-argument SetTotalBytesLimit:
# the second argument was only a warning threshold, so dropping it keeps the limit as it was.
if grep -q 'SetTotalBytesLimit(kProtoReadBytesLimit, [0-9]*)' "$io_cpp"; then
    echo "build_caffe.sh: patching $io_cpp for protobuf >= 3.20 (one-argument SetTotalBytesLimit)"
    sed -i 's/SetTotalBytesLimit(kProtoReadBytesLimit, [0-9]*)/SetTotalBytesLimit(kProtoReadBytesLimit)/' "$io_cpp"
fi

mkdir -p "$build"
cd "$build"
"$cmake_bin" "$src" -DCMAKE_BUILD_TYPE=Release -DCPU_ONLY=ON -DBLAS=Open \
    -DUSE_OPENCV=OFF -DUSE_LEVELDB=OFF -DUSE_LMDB=OFF -DBUILD_python=OFF -DBUILD_docs=OFF
make -j"${JOBS:-2}" caffe caffe.bin
[ -x "$build/tools/caffe" ] || die "the build finished without $build/tools/caffe"
echo "$build/tools/caffe"
