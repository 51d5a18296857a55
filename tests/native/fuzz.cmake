# Included from tfq/delegates/CMakeLists.txt when TFQ_BUILD_FUZZER is on:
# tfq_fuzz_node, the libFuzzer target over the delegate's node path
# (tests/native/fuzz_node.cc). The delegate's sources are compiled into it
# with the fuzzer's coverage instrumentation, AddressSanitizer and
# UndefinedBehaviorSanitizer (per-file ISA flags apply: same directory
# scope). clang++ only: libFuzzer ships with clang.
#   cmake -S tfq/delegates -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ \
#         -DTFQ_BUILD_FUZZER=ON -DTFQ_COPY_TO_SOURCE=OFF
#   cmake --build build-fuzz --target tfq_fuzz_node
if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  message(FATAL_ERROR "TFQ_BUILD_FUZZER needs clang++ (libFuzzer is part of clang): "
                      "configure with -DCMAKE_CXX_COMPILER=clang++")
endif()
set(TFQ_FUZZ_DIR ${CMAKE_CURRENT_LIST_DIR})

# The delegate's and the kernel library's sources (libtfq_testing.so's
# entry points are not on the node path).
get_target_property(_tfq_fuzz_sources tfq_delegate SOURCES)
get_target_property(_tfq_fuzz_kernel_sources tfq_kernels SOURCES)
get_target_property(_tfq_fuzz_defs tfq_kernels COMPILE_DEFINITIONS)
get_target_property(_tfq_fuzz_delegate_defs tfq_delegate COMPILE_DEFINITIONS)
if(_tfq_fuzz_delegate_defs)
  list(APPEND _tfq_fuzz_defs ${_tfq_fuzz_delegate_defs})
endif()
add_executable(tfq_fuzz_node ${TFQ_FUZZ_DIR}/fuzz_node.cc ${_tfq_fuzz_sources}
               ${_tfq_fuzz_kernel_sources})
target_include_directories(tfq_fuzz_node PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
if(_tfq_fuzz_defs)
  target_compile_definitions(tfq_fuzz_node PRIVATE ${_tfq_fuzz_defs})
endif()
set(_tfq_fuzz_flags -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined)
target_compile_options(tfq_fuzz_node PRIVATE ${_tfq_fuzz_flags} -fno-omit-frame-pointer -gline-tables-only -O1
                       -Wall -Wextra -Wno-unused-parameter -ffp-contract=off)
target_link_options(tfq_fuzz_node PRIVATE ${_tfq_fuzz_flags})
target_link_libraries(tfq_fuzz_node PRIVATE Threads::Threads)
