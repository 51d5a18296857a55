#!/bin/sh
# Coverage is not supported in tfq's offline Bazel setup (`bazel coverage`).
echo "coverage tools are not available offline" >&2
exit 1
