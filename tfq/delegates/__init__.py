"""The tfq native delegate (C++): sources and build files.

The shared library `libtfq_delegate.so` is built by the package install
(CMake through scikit-build-core). Users load it with `tfq.Interpreter` or
`load_delegate(tfq.delegate_path())`. The same build makes the test library
`libtfq_testing.so` (never installed); tests/helpers/native.py binds it.
"""
