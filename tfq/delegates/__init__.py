"""The tfq native delegate (C++): sources, build files and test bindings.

The shared library `libtfq_delegate.so` is built by the package install
(CMake through scikit-build-core). Users load it with `tfq.Interpreter` or
`load_delegate(tfq.delegate_path())`; `tfq.delegates.native` binds its
test-only C entry points for the kernel tests.
"""
