"""Pruning + ADMM with MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 (TF_CONFIG).

Every subprocess has a timeout and runs in its own process group, killed
when a test ends. The workers run tests/helpers/multiworker_fit.py (a 17k
weight LeNet-5 on 256 MNIST images, 4 epochs of 4 steps: pruning to 50%, then
ADMM ternary, then one epoch with frozen codes).
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from tfq import distribute

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPER = os.path.join(ROOT, "tests", "helpers", "multiworker_fit.py")
RUN_TIMEOUT = 300  # seconds for a whole training run (it takes 30-60 s on 2 busy cores)


def _env(tf_config):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = tf_config
    return env


class Procs:
    """Started subprocesses, each in its own process group; all killed on exit."""

    def __init__(self):
        self.procs = []

    def start(self, out, tf_config, log, *extra):
        p = subprocess.Popen(
            [sys.executable, HELPER, "--out", str(out), *map(str, extra)],
            env=_env(tf_config), stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        p.log = log
        self.procs.append(p)
        return p

    def wait(self, p, timeout=RUN_TIMEOUT):
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(p)
            pytest.fail(f"subprocess did not end within {timeout} s; log:\n{_tail(p.log)}")

    @staticmethod
    def kill(p):
        if p.poll() is None and getattr(p, "launcher", False):
            p.terminate()  # the launcher's trap stops its workers
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            self.kill(p)


def _tail(path, n=3000):
    if os.path.isdir(path):
        return "\n".join(f"== {f}\n" + _tail(os.path.join(path, f), n) for f in sorted(os.listdir(path)))
    with open(path, errors="replace") as f:
        return f.read()[-n:]


def _run_ok(procs, ps):
    for p in ps:
        rc = procs.wait(p)
        assert rc == 0, _tail(p.log)


def _epochs(path):
    with open(path) as f:
        return {str(r["epoch"]): r["checksums"] for r in map(json.loads, f)}


def _scratch():
    # Not pytest's tmp_path: its numbered directories are pruned by any other
    # pytest session of the same user, which would remove them mid-run.
    return pathlib.Path(tempfile.mkdtemp(prefix="tfq-multiworker-"))


@pytest.fixture
def tmp_dir():
    d = _scratch()
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def runs():
    """An uninterrupted two-worker run and a single-process run over the same global batch, side by side."""
    base = _scratch()
    with Procs() as procs:
        configs = distribute.local_cluster(2)
        workers = [procs.start(base / "mw", c, base / f"w{i}.log") for i, c in enumerate(configs)]
        single = procs.start(base / "single", None, base / "single.log")
        _run_ok(procs, workers + [single])
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _load(d, rank):
    with open(d / f"result-{rank}.json") as f:
        result = json.load(f)
    return result, dict(np.load(d / f"weights-{rank}.npz"))


def test_every_state_variable_identical_on_both_workers_after_every_epoch(runs):
    a, b = _epochs(runs / "mw" / "epochs-0.jsonl"), _epochs(runs / "mw" / "epochs-1.jsonl")
    assert sorted(a) == sorted(b) == ["0", "1", "2", "3", "start"]
    for epoch in a:
        names = a[epoch]
        # model weights, Adam's slots, ADMM's G/U/codes/scale/rho/phase, pruning masks/slopes
        assert any(n.startswith("tfq_admm/") for n in names) and any(n.startswith("tfq_pruning/") for n in names)
        assert any(n.startswith("optimizer/") for n in names)
        differ = [n for n in names if a[epoch][n] != b[epoch][n]]
        assert not differ, (epoch, differ)
    ra, wa = _load(runs / "mw", 0)
    rb, wb = _load(runs / "mw", 1)
    assert ra["replicas"] == 2
    assert ra["checksums"] == rb["checksums"]
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)


def test_two_workers_match_one_process_over_the_same_global_batch(runs):
    rm, wm = _load(runs / "mw", 0)
    rs, ws = _load(runs / "single", 0)
    assert sorted(wm) == sorted(ws)
    for k in wm:
        exact = any(t in k for t in ("mask", "codes", "phase", "rho", "step", "iteration", "initialized"))
        if exact:
            # Decisions (masks, codes) and counters: identical.
            assert np.array_equal(wm[k], ws[k]), k
        elif k.startswith("optimizer|") and k.endswith(("momentum", "velocity")):
            # Adam's averages of the gradients of the convolution feeding the
            # batch norm (and of its beta): the batch norm cancels the
            # kernel's scale, so the gradient is a difference of nearly equal
            # sums and keeps the summation-order error (measured 2e-4 of the
            # largest entry; 1e-6 for every other layer).
            np.testing.assert_allclose(wm[k], ws[k], rtol=0, atol=1e-3 * np.abs(ws[k]).max(), err_msg=k)
        else:
            # Weights and tfq's state: the all-reduce sums in another order
            # (measured <= 3e-7); batch-norm statistics are over the global
            # batch on both sides.
            np.testing.assert_allclose(wm[k], ws[k], rtol=1e-5, atol=2e-6, err_msg=k)
    for key in ("loss", "accuracy", "sparsity", "admm_residual"):
        np.testing.assert_allclose(rm["history"][key], rs["history"][key], rtol=1e-4, atol=1e-5, err_msg=key)
    assert rm["accuracy"] == rs["accuracy"]
    # Exactly ternary, at the target sparsity, in the compressed layers.
    for layer in ("conv2", "fc1"):
        w = wm[f"model|tiny|{layer}|kernel"]
        codes = wm[f"tfq_admm|{layer}__kernel__codes"]
        assert np.array_equal(np.sign(w), codes), layer
        mags = np.abs(w).reshape(-1, w.shape[-1])
        for c in range(w.shape[-1]):
            assert np.unique(mags[:, c][mags[:, c] > 0]).size <= 1, (layer, c)
        assert (w == 0).mean() >= 0.5 - 1e-3, layer
    assert int(wm["tfq_admm|phase"]) == 3  # PHASE_DONE


def test_killed_worker_resumes_from_backup_to_the_same_result(runs, tmp_dir):
    configs = distribute.local_cluster(2)
    backup = tmp_dir / "backup"
    out = tmp_dir / "run"
    with Procs() as procs:
        first = [procs.start(out, c, tmp_dir / f"a{i}.log", "--backup", backup) for i, c in enumerate(configs)]
        progress = out / "progress-1"
        deadline = time.time() + RUN_TIMEOUT
        # SIGKILL worker 1 in the middle of epoch 3 (fine-tuning): the backup
        # of epoch 2 holds ADMM's phase, rho, G, U and the pruning masks.
        while True:
            assert time.time() < deadline, _tail(first[1].log)
            assert first[1].poll() is None, _tail(first[1].log)
            try:
                epoch, batch = map(int, progress.read_text().split())
            except (OSError, ValueError):
                epoch = batch = -1
            if (epoch, batch) >= (3, 1):
                break
            time.sleep(0.1)
        assert os.path.isdir(backup / "worker-1")
        killed = time.time()
        os.killpg(first[1].pid, signal.SIGKILL)
        # The survivor ends with a clear error in bounded time (not a hang).
        rc = procs.wait(first[0], timeout=120)
        lost_after = time.time() - killed
        assert rc != 0
        assert "lost contact with the other workers" in _tail(first[0].log), _tail(first[0].log)
        assert lost_after < 120
        # The job is restarted with the same configuration.
        again = [procs.start(out, c, tmp_dir / f"b{i}.log", "--backup", backup) for i, c in enumerate(configs)]
        _run_ok(procs, again)
    resumed, w = _load(out, 0)
    _, w1 = _load(out, 1)
    assert len(resumed["history"]["loss"]) == 1  # epoch 3 only
    ref, wref = _load(runs / "mw", 0)
    # Nothing lost (weights, Adam, ADMM phase/rho/G/U/codes, masks): bitwise the uninterrupted run.
    differ = [k for k in wref if not np.array_equal(wref[k], w[k])]
    assert not differ, differ
    assert all(np.array_equal(w[k], w1[k]) for k in w)
    assert resumed["accuracy"] == ref["accuracy"]
    assert not os.path.exists(backup / "worker-0")  # deleted at the end, as Keras does


def test_unreachable_worker_ends_with_a_clear_error(tmp_dir):
    configs = distribute.local_cluster(2)
    with Procs() as procs:
        t0 = time.time()
        p = procs.start(tmp_dir / "out", configs[0], tmp_dir / "w0.log", "--startup-timeout", "5")
        rc = procs.wait(p, timeout=120)
    assert rc == distribute.EXIT_STARTUP_TIMEOUT, _tail(p.log)
    assert "could not form the cluster within 5 s" in _tail(p.log)
    assert time.time() - t0 < 120


def test_mismatched_tf_configs_end_both_workers_in_bounded_time(tmp_dir):
    # Worker 0 is told the cluster is [p0, p1], worker 1 that it is [p0, p2]:
    # worker 0 never hears from p1 (exit 3); worker 1 hears p0 answer, enters
    # TensorFlow's start-up and is ended by the backstop after its timeout.
    p0, p1, p2 = distribute.free_ports(3)
    a = json.loads(distribute.local_cluster(2, ports=[p0, p1])[0])
    b = json.loads(distribute.local_cluster(2, ports=[p0, p2])[1])
    with Procs() as procs:
        t0 = time.time()
        w0 = procs.start(tmp_dir / "out", json.dumps(a), tmp_dir / "w0.log", "--startup-timeout", "5")
        w1 = procs.start(tmp_dir / "out", json.dumps(b), tmp_dir / "w1.log", "--startup-timeout", "5")
        rc0, rc1 = procs.wait(w0, timeout=120), procs.wait(w1, timeout=120)
    assert rc0 == distribute.EXIT_STARTUP_TIMEOUT and f"no answer from ['127.0.0.1:{p1}']" in _tail(w0.log), _tail(w0.log)
    assert rc1 != 0, _tail(w1.log)
    assert time.time() - t0 < 120


def test_bad_tf_config_is_named():
    with pytest.raises(ValueError, match="not valid JSON"):
        distribute.cluster_info("{worker")
    with pytest.raises(ValueError, match="out of range"):
        distribute.cluster_info({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 2}})
    with pytest.raises(ValueError, match="not 'host:port'"):
        distribute.cluster_info({"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}})
    with pytest.raises(ValueError, match="appears twice"):
        distribute.cluster_info({"cluster": {"worker": ["h:1", "h:1"]}, "task": {"type": "worker", "index": 0}})
    with pytest.raises(ValueError, match="only 'chief' and 'worker'"):
        distribute.cluster_info({"cluster": {"worker": ["h:1"], "ps": ["h:2"]}, "task": {"type": "worker", "index": 0}})
    info = distribute.cluster_info({"cluster": {"chief": ["h:1"], "worker": ["h:2", "h:3"]}, "task": {"type": "worker", "index": 1}})
    assert (info.rank, info.num_workers, info.is_chief, info.address) == (2, 3, False, "h:3")
    import tfq

    assert tfq.distribute is distribute
    configs = [json.loads(c) for c in distribute.local_cluster(3)]
    assert [distribute.cluster_info(c).rank for c in configs] == [0, 1, 2]
    assert len({a for a in configs[0]["cluster"]["worker"]}) == 3


def test_prepare_refuses_what_it_cannot_do():
    import keras
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        with pytest.raises(ValueError, match="outside strategy.scope"):
            distribute.prepare(model, strategy)
    wrapped = distribute.prepare(model, strategy)
    assert wrapped.weights[0] is model.weights[0] or wrapped.weights[0].path == model.weights[0].path
    with pytest.raises(ValueError, match="TF_CONFIG is not set"):
        os.environ.pop("TF_CONFIG", None)
        distribute.multi_worker_strategy()


def test_launcher_script_runs_tfq_compress_on_two_workers(tmp_dir):
    out, logs = tmp_dir / "m.keras", tmp_dir / "logs"
    cmd = ["bash", os.path.join(ROOT, "scripts", "train_multiworker.sh"), "-n", "2", "--logs", str(logs),
           os.path.join(ROOT, "scripts", "compress_multiworker.py"), "--model", "lenet300_100", "--samples", "256", "--val-samples", "500",
           "--epochs", "2", "--sparsity", "0.5", "--batch-size", "128", "--out", str(out)]
    env = dict(_env(None), PYTHON=sys.executable)
    with Procs() as procs:
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        p.launcher, p.log = True, str(logs)
        procs.procs.append(p)
        rc = procs.wait(p)
    assert rc == 0, _tail(logs)
    line = [l for l in (logs / "worker-0.log").read_text().splitlines() if l.startswith("{")][-1]
    assert json.loads(line)["workers"] == 2
    assert not [l for l in (logs / "worker-1.log").read_text().splitlines() if l.startswith("{")]  # chief only
    import keras

    w = keras.models.load_model(out).get_layer("fc2").kernel.numpy()
    assert (w == 0).mean() >= 0.5 - 1e-3
    for c in range(w.shape[1]):
        assert np.unique(np.abs(w[:, c][w[:, c] != 0])).size <= 1, c


def test_launcher_rejects_bad_arguments(tmp_dir):
    script = os.path.join(ROOT, "scripts", "train_multiworker.sh")
    for args, msg in ((["-n", "x", "a.py"], "-n needs a positive number"), ([str(tmp_dir / "nope.py")], "no such script"),
                      (["--bogus"], "unknown option")):
        p = subprocess.run(["bash", script, *args], capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and msg in p.stderr, (args, p.stderr)
