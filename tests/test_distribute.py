"""ADMM + pruning under tf.distribute.MirroredStrategy on two logical CPU devices."""

import json
import os
import subprocess
import sys


def test_mirrored_strategy_two_logical_cpus():
    script = os.path.join(os.path.dirname(__file__), "helpers", "distribute_fit.py")
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    assert "admm_residual" in out["history"] and "sparsity" in out["history"]
    for name, r in out["layers"].items():
        assert r["replica_diff"] == 0.0, name
        assert r["sparsity"] >= 0.5 - 1e-3, name
        assert r["in_set_err"] < 1e-6, name
