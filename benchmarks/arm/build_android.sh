#!/usr/bin/env bash
# Builds libtfq_delegate.so and tfq_node_runner for Android arm64-v8a with the
# NDK (no Gradle needed). Output: build-android-arm64/.
#
#   ANDROID_NDK=/path/to/ndk bash benchmarks/arm/build_android.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
NDK="${ANDROID_NDK:-${ANDROID_NDK_HOME:-}}"
if [ -z "$NDK" ] || [ ! -f "$NDK/build/cmake/android.toolchain.cmake" ]; then
  echo "set ANDROID_NDK to an NDK folder (r26 or newer), e.g. \$ANDROID_HOME/ndk/26.1.10909125" >&2
  exit 2
fi
OUT="${OUT:-$ROOT/build-android-arm64}"
cmake -S "$ROOT/tfq/delegates" -B "$OUT" \
  -DCMAKE_TOOLCHAIN_FILE="$NDK/build/cmake/android.toolchain.cmake" \
  -DANDROID_ABI=arm64-v8a -DANDROID_PLATFORM=android-24 -DANDROID_STL=c++_static \
  -DCMAKE_BUILD_TYPE=Release -DTFQ_COPY_TO_SOURCE=OFF -DTFQ_BUILD_NATIVE_TESTS=ON
cmake --build "$OUT" -j"$(nproc)" --target tfq_delegate tfq_node_runner
echo "built: $OUT/libtfq_delegate.so $OUT/tfq_node_runner"
