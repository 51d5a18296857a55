# Included from tfq/delegates/CMakeLists.txt when TFQ_BUILD_NATIVE_TESTS is on
# (same directory scope, so per-file ISA flags such as -march=...+dotprod
# apply). Builds the delegate's own sources once more as a static library
# over the kernel library (tfq_kernels) and links two test programs against
# it, statically, so that they run under qemu-aarch64 without a target
# sysroot:
#   tfq_kernels_test    every SIMD kernel table vs the scalar reference
#   tfq_node_runner     the delegate's node-level path on exported tensors
set(TFQ_NATIVE_TEST_DIR ${CMAKE_CURRENT_LIST_DIR})

get_target_property(_tfq_sources tfq_delegate SOURCES)
get_target_property(_tfq_defs tfq_delegate COMPILE_DEFINITIONS)
add_library(tfq_delegate_static STATIC ${_tfq_sources})
target_compile_options(tfq_delegate_static PRIVATE -Wall -Wextra -Wno-unused-parameter
                       -ffp-contract=off)
if(_tfq_defs)
  target_compile_definitions(tfq_delegate_static PUBLIC ${_tfq_defs})
endif()
target_include_directories(tfq_delegate_static PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
if(TFQ_TFLITE_INCLUDE_DIR)
  target_include_directories(tfq_delegate_static PUBLIC ${TFQ_TFLITE_INCLUDE_DIR})
endif()
target_link_libraries(tfq_delegate_static PUBLIC tfq_kernels Threads::Threads)

foreach(_t tfq_kernels_test tfq_node_runner)
  if(_t STREQUAL "tfq_kernels_test")
    add_executable(${_t} ${TFQ_NATIVE_TEST_DIR}/kernels_test.cc)
  else()
    add_executable(${_t} ${TFQ_NATIVE_TEST_DIR}/node_runner.cc)
  endif()
  target_compile_options(${_t} PRIVATE -Wall -Wextra -Wno-unused-parameter -ffp-contract=off)
  target_link_libraries(${_t} PRIVATE tfq_delegate_static)
  if(CMAKE_CROSSCOMPILING)
    target_link_options(${_t} PRIVATE -static)
  endif()
endforeach()
