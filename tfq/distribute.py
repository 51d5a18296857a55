"""Training on several machines: `tf.distribute.MultiWorkerMirroredStrategy` with Keras 3.

Keras 3 (checked up to 3.15.1 with TensorFlow 2.21) cannot `fit` a model that
was created under a `MultiWorkerMirroredStrategy` scope, and no release fixes
it yet (keras-team/keras#20585). Two places in its TensorFlow trainer fail:

1. `fit` first pulls one batch to build the model symbolically
   (`_maybe_symbolic_build`) and averages that batch over the replicas with
   one eager `strategy.reduce("MEAN", (x, y), axis=None)`. It hands the whole
   `(x, y)` tuple to `reduce`; `MirroredStrategy` on one machine takes a
   shortcut for non-distributed values, but with several workers the collective
   implementation converts its argument to one tensor, which a tuple of
   `PerReplica` values is not: "Attempt to convert a value (PerReplica ...)
   with an unsupported type to a Tensor".
2. Each step's logs are reduced with `strategy.reduce("MEAN", v, axis=0)` when
   several workers take part; the loss and metric results are scalars, which
   have no axis 0.

Keras skips step 1 for a model that recorded no strategy when it was created
(it then builds inside the first traced step and takes the strategy that is
current when `fit` runs); step 2 works on values with a leading axis.
`prepare` uses both: the variables are created under the strategy's scope (so
they are mirrored across workers), the functional model that `fit` trains is
assembled outside it, and its `train_step` and `test_step` (the documented
override points) return every scalar log with a leading axis of length 1, so
Keras' reduction is the mean over the replicas of each replica's metric.
Public calls only; nothing of Keras is patched (docs/distributed.md).

This module also reads and checks `TF_CONFIG`, makes local clusters for
trying a job on one machine, bounds the time a job waits for a missing or
dead worker, and checks that all workers hold identical state.
"""

import dataclasses
import hashlib
import json
import os
import socket
import sys
import threading

import numpy as np

__all__ = [
    "ClusterInfo",
    "cluster_info",
    "free_ports",
    "local_cluster",
    "multi_worker_strategy",
    "prepare",
    "state_checksums",
    "ConsistencyCheck",
    "worker_dir",
]

# Exit code of a worker whose cluster did not form in time (`multi_worker_strategy`).
EXIT_STARTUP_TIMEOUT = 3


@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    """This process's place in the cluster described by `TF_CONFIG`."""

    task_type: str
    index: int
    workers: tuple  # "host:port" of every training task, chief first if any

    @property
    def num_workers(self):
        return len(self.workers)

    @property
    def rank(self):
        """0 for the chief (or worker 0 when there is no chief), then the workers in order."""
        return self.workers.index(self.address)

    @property
    def address(self):
        return self.jobs[self.task_type][self.index]

    @property
    def is_chief(self):
        return self.rank == 0

    jobs: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)


def cluster_info(tf_config=None):
    """Parses and checks `TF_CONFIG` (the environment's unless given, as a string or dict).

    Returns None when there is no `TF_CONFIG` (a single process).

    Raises:
        ValueError: a malformed `TF_CONFIG`, naming what is wrong.
    """
    if tf_config is None:
        tf_config = os.environ.get("TF_CONFIG")
        if not tf_config:
            return None
    if isinstance(tf_config, str):
        try:
            tf_config = json.loads(tf_config)
        except json.JSONDecodeError as e:
            raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from None
    if not isinstance(tf_config, dict) or not isinstance(tf_config.get("cluster"), dict):
        raise ValueError('TF_CONFIG needs {"cluster": {"worker": ["host:port", ...]}, "task": {...}}')
    cluster, task = tf_config["cluster"], tf_config.get("task")
    jobs = {}
    for job in ("chief", "worker"):
        addrs = cluster.get(job, [])
        if not isinstance(addrs, list) or not all(isinstance(a, str) for a in addrs):
            raise ValueError(f"TF_CONFIG cluster[{job!r}] must be a list of 'host:port' strings, got {addrs!r}")
        for a in addrs:
            host, _, port = a.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"TF_CONFIG cluster[{job!r}]: {a!r} is not 'host:port'")
        jobs[job] = list(addrs)
    if len(jobs["chief"]) > 1:
        raise ValueError(f"TF_CONFIG: at most one chief, got {len(jobs['chief'])}")
    extra = sorted(set(cluster) - {"chief", "worker"})
    if extra:
        raise ValueError(f"TF_CONFIG: MultiWorkerMirroredStrategy uses only 'chief' and 'worker' jobs, got {extra}")
    workers = tuple(jobs["chief"] + jobs["worker"])
    if not workers:
        raise ValueError("TF_CONFIG: the cluster has no 'chief' or 'worker' task")
    if len(set(workers)) != len(workers):
        raise ValueError(f"TF_CONFIG: an address appears twice in the cluster: {list(workers)}")
    if not isinstance(task, dict) or task.get("type") not in jobs:
        raise ValueError(f"TF_CONFIG task must be {{'type': 'chief' or 'worker', 'index': i}}, got {task!r}")
    index = task.get("index")
    if not isinstance(index, int) or not 0 <= index < len(jobs[task["type"]]):
        raise ValueError(
            f"TF_CONFIG task index {index!r} is out of range: the cluster has "
            f"{len(jobs[task['type']])} {task['type']!r} task(s)"
        )
    return ClusterInfo(task["type"], index, workers, jobs=jobs)


def free_ports(n, host="127.0.0.1"):
    """`n` distinct TCP ports free on `host` right now (the OS picks them)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def local_cluster(n, host="127.0.0.1", ports=None):
    """`TF_CONFIG` strings for `n` worker processes on this machine, worker 0 first."""
    if int(n) < 1:
        raise ValueError(f"need at least one worker, got {n}")
    ports = list(ports) if ports is not None else free_ports(n, host)
    if len(ports) != n:
        raise ValueError(f"need {n} ports, got {len(ports)}")
    workers = [f"{host}:{p}" for p in ports]
    return [json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}) for i in range(n)]


def worker_dir(base, info=None):
    """A per-worker directory under `base` (`base/worker-<rank>`), e.g. for `BackupAndRestore`.

    Keras 3's `BackupAndRestore` writes from every process; one directory per
    worker keeps two workers from writing the same file.
    """
    info = info or cluster_info()
    return os.path.join(base, f"worker-{info.rank if info else 0}")


def _fingerprint(info):
    """A number every worker of the same cluster computes alike (differs when the TF_CONFIGs disagree)."""
    text = json.dumps({"workers": list(info.workers)}, sort_keys=True)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:3], "little")


def _all_gather(strategy, values):
    """Every replica's copy of a float64 vector, stacked (one collective), from cross-replica context."""
    import tensorflow as tf

    values = tf.constant(np.asarray(values, np.float64)[None])

    @tf.function
    def run():
        return strategy.run(lambda: tf.distribute.get_replica_context().all_gather(values, axis=0))

    out = run()
    return np.asarray(strategy.experimental_local_results(out)[0])


def multi_worker_strategy(startup_timeout=120.0, collective_timeout=120.0):
    """A `tf.distribute.MultiWorkerMirroredStrategy` from `TF_CONFIG`, with bounded waits.

    Checks `TF_CONFIG` first (`cluster_info`), then forms the cluster. A worker
    that cannot reach the others within `startup_timeout` seconds prints why to
    stderr and exits with code 3 (TensorFlow itself waits up to an hour).
    Every collective (gradients, metrics) fails with DeadlineExceeded after
    `collective_timeout` seconds, so a worker that dies mid-training and never
    comes back ends the others with an error instead of a hang (TensorFlow's
    coordination service usually reports the dead peer sooner, after its
    10-second heartbeat timeout). Finally all workers compare a fingerprint of
    their cluster list and raise if they were started with different ones.

    Raises:
        ValueError: no or malformed `TF_CONFIG`, or workers that disagree on the cluster.
    """
    import tensorflow as tf

    info = cluster_info()
    if info is None:
        raise ValueError("multi_worker_strategy: TF_CONFIG is not set (see docs/distributed.md)")
    done = threading.Event()

    def watchdog():
        if not done.wait(startup_timeout):
            others = [a for a in info.workers if a != info.address]
            sys.stderr.write(
                f"tfq.distribute: worker {info.rank} ({info.address}) could not form the cluster within "
                f"{startup_timeout:g} s: another worker is unreachable or was started with a different "
                f"TF_CONFIG (expected {others}); giving up\n"
            )
            sys.stderr.flush()
            os._exit(EXIT_STARTUP_TIMEOUT)

    # A thread, because the strategy's constructor blocks inside TensorFlow's
    # C++ runtime with no timeout of its own exposed in the public API.
    threading.Thread(target=watchdog, daemon=True, name="tfq-startup-watchdog").start()
    try:
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=float(collective_timeout))
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        seen = _all_gather(strategy, [_fingerprint(info)])[:, 0]
    finally:
        done.set()
    if np.any(seen != seen[0]):
        raise ValueError(
            f"tfq.distribute: the workers were started with different TF_CONFIG clusters "
            f"(this worker: {list(info.workers)})"
        )
    if strategy.num_replicas_in_sync < info.num_workers:
        raise ValueError(f"expected at least {info.num_workers} replicas, got {strategy.num_replicas_in_sync}")
    return strategy


def prepare(model, strategy=None):
    """Returns a model that `fit` can train under `strategy` (a multi-worker one included).

    Create `model` under `strategy.scope()` (its variables are then mirrored),
    call `prepare` outside the scope, then compile and fit the returned model
    inside the scope. The returned model is a functional model over the same
    layers and variables (nothing is copied), so callbacks, `save` and
    `BackupAndRestore` see the same weights; for a model with one strategy
    on one machine it changes nothing but the log reduction.

    Args:
        model: a built Keras functional or Sequential model with known inputs.
        strategy: the strategy it will be trained with (default: none to check).

    Raises:
        ValueError: called inside a strategy scope, or a model without
            symbolic inputs (a subclassed model: wrap it in a functional one).
    """
    import keras
    import tensorflow as tf

    if tf.distribute.has_strategy():
        raise ValueError("tfq.distribute.prepare: call it outside strategy.scope() (the model it returns must not record a strategy)")
    if not isinstance(model, keras.Model):
        raise TypeError(f"prepare expects a keras.Model, got {type(model).__name__}")
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise ValueError(
            f"tfq.distribute.prepare: model {model.name!r} has no symbolic inputs; build it as a "
            "functional or Sequential model with keras.Input, or wrap it: "
            "keras.Model(inp, model(inp)) under strategy.scope()"
        )
    if strategy is not None:
        for v in model.variables[:1]:
            if not isinstance(v.value, tf.distribute.DistributedValues) and strategy.num_replicas_in_sync > 1:
                raise ValueError(f"tfq.distribute.prepare: model {model.name!r} was not created under strategy.scope()")
    single = lambda t: t[0] if isinstance(t, (list, tuple)) and len(t) == 1 else t  # noqa: E731
    wrapped = keras.Model(single(inputs), single(outputs), name=model.name)
    # The step's logs are averaged over the replicas along axis 0 when
    # several workers take part (see the module docstring); a leading axis of
    # length 1 on every scalar makes that the plain mean over the replicas.
    # Instance attributes, so the class stays keras' own and `save` writes a
    # plain Keras model.
    wrapped.train_step = _with_leading_axis(wrapped.train_step)
    wrapped.test_step = _with_leading_axis(wrapped.test_step)
    return wrapped


def _with_leading_axis(step):
    import keras

    def wrapped_step(data):
        logs = step(data)
        if not isinstance(logs, dict):
            return logs
        return {k: keras.ops.expand_dims(v, 0) if len(getattr(v, "shape", ())) == 0 else v for k, v in logs.items()}

    return wrapped_step


def _state_variables(model):
    """(name, variable) of the model's weights, the optimizer's, and tfq's compression state."""
    out = [(f"model/{v.path}", v) for v in model.weights]
    opt = getattr(model, "optimizer", None)
    if opt is not None:
        out += [(f"optimizer/{v.path}", v) for v in opt.variables]
    for attr in ("_tfq_admm", "_tfq_pruning"):
        state = getattr(model, attr, None)
        if state is not None:
            out += [(f"{attr[1:]}/{v.name}", v) for v in state.weights]
    return out


def state_checksums(model):
    """{name: checksum} of every variable of the model, its optimizer and tfq's state.

    The checksum is the SHA-256 of the variable's bytes (this replica's copy),
    as a hex string: equal on two workers only when the values are bitwise equal.
    """
    import keras

    return {
        name: hashlib.sha256(np.ascontiguousarray(keras.ops.convert_to_numpy(v)).tobytes()).hexdigest()[:16]
        for name, v in _state_variables(model)
    }


def _make_consistency_check():
    import keras

    class ConsistencyCheck(keras.callbacks.Callback):
        """Checks at every epoch end that all workers hold bitwise-identical state.

        One all-gather of one number per variable per epoch (a 48-bit hash
        of its bytes), so it costs nothing next to the gradients. Raises `RuntimeError` naming the first variable that
        differs. `log_path`: also append `{"epoch", "checksums"}` lines (JSON)
        to this file.
        """

        def __init__(self, strategy, log_path=None):
            super().__init__()
            self.strategy = strategy
            self.log_path = log_path

        def _check(self, epoch):
            sums = state_checksums(self.model)
            names = sorted(sums)
            mine = [int(sums[n][:12], 16) for n in names]  # 48 bits: exact in float64
            seen = _all_gather(self.strategy, mine)
            bad = [n for j, n in enumerate(names) if np.any(seen[:, j] != seen[0, j])]
            if self.log_path:
                with open(self.log_path, "a") as f:
                    f.write(json.dumps({"epoch": epoch, "checksums": sums}) + "\n")
            if bad:
                raise RuntimeError(
                    f"tfq.distribute: after epoch {epoch} the workers hold different values of "
                    f"{len(bad)} variable(s), first {bad[0]!r}"
                )

        def on_epoch_end(self, epoch, logs=None):
            self._check(epoch)

    return ConsistencyCheck


def __getattr__(name):
    # Callbacks subclass keras.callbacks.Callback: built on first use, so that
    # importing tfq.distribute (e.g. for local_cluster in a launcher) stays light.
    if name == "ConsistencyCheck":
        cls = _make_consistency_check()
        globals()["ConsistencyCheck"] = cls
        return cls
    raise AttributeError(name)
