"""Offline stand-in for @rules_java//java:defs.bzl: the same names, forwarding to Bazel's native Java rules.

Bazel registers its JDK toolchains from @bazel_tools//tools/jdk, whose BUILD
loads these names from @rules_java; tfq has no Java target. This stub only
lets that package load offline.
"""

def java_binary(**attrs):
    native.java_binary(**attrs)

def java_import(**attrs):
    native.java_import(**attrs)

def java_library(**attrs):
    native.java_library(**attrs)

def java_runtime(**attrs):
    native.java_runtime(**attrs)

def java_toolchain(**attrs):
    native.java_toolchain(**attrs)

def java_test(**attrs):
    native.java_test(**attrs)

def java_plugin(**attrs):
    native.java_plugin(**attrs)
