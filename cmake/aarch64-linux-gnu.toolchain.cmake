# Cross build for 64-bit ARM Linux (Raspberry Pi 4/5, Jetson, Graviton, ...)
# with Debian's cross compiler:
#
#   apt-get install g++-aarch64-linux-gnu qemu-user
#   cmake -S tfq/delegates -B build-aarch64 \
#     -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.toolchain.cmake
#
# Binaries run on the host through qemu (CMAKE_CROSSCOMPILING_EMULATOR):
#   qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu max build-aarch64/tfq_kernels_test
# Override the compiler prefix with -DTFQ_CROSS_PREFIX=... (e.g. a Linaro or
# Buildroot toolchain) and the sysroot with -DTFQ_CROSS_SYSROOT=....
# -DTFQ_CROSS_COMPILER=clang compiles with clang++ --target=aarch64-linux-gnu
# instead (the compiler the Android NDK uses), linking with the GNU cross tools.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(TFQ_CROSS_PREFIX "aarch64-linux-gnu-" CACHE STRING "Cross compiler prefix")
set(TFQ_CROSS_SYSROOT "/usr/aarch64-linux-gnu" CACHE PATH "Target root (libc, libstdc++)")
set(TFQ_CROSS_COMPILER "gcc" CACHE STRING "gcc or clang")
# try_compile projects re-read this file: pass the choices on.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES TFQ_CROSS_PREFIX TFQ_CROSS_SYSROOT TFQ_CROSS_COMPILER)

if(TFQ_CROSS_COMPILER STREQUAL "clang")
  set(CMAKE_C_COMPILER clang)
  set(CMAKE_CXX_COMPILER clang++)
  set(CMAKE_C_COMPILER_TARGET aarch64-linux-gnu)
  set(CMAKE_CXX_COMPILER_TARGET aarch64-linux-gnu)
else()
  set(CMAKE_C_COMPILER "${TFQ_CROSS_PREFIX}gcc")
  set(CMAKE_CXX_COMPILER "${TFQ_CROSS_PREFIX}g++")
endif()

set(CMAKE_FIND_ROOT_PATH "${TFQ_CROSS_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

find_program(TFQ_QEMU_AARCH64 qemu-aarch64)
if(TFQ_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR "${TFQ_QEMU_AARCH64};-L;${TFQ_CROSS_SYSROOT}")
endif()
