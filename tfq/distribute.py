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

import contextlib
import dataclasses
import faulthandler
import hashlib
import json
import os
import socket
import sys
import time

import numpy as np

from tfq import state as tfq_state

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
    "worker_errors",
    "barrier",
]

# Exit code of a worker whose cluster did not form in time (`multi_worker_strategy`).
EXIT_STARTUP_TIMEOUT = 3


@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    """This process's place in the cluster described by `TF_CONFIG`."""

    task_type: str
    index: int
    workers: tuple  # "host:port" of every training task, chief first if any
    jobs: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)  # job -> addresses

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


_GATHER = {}  # (strategy id, length) -> traced function: one trace per shape, not one per call


def _all_gather(strategy, values):
    """Every replica's copy of a float64 vector, stacked (one collective), from cross-replica context."""
    import tensorflow as tf

    values = np.asarray(values, np.float64)
    key = (id(strategy), values.size)
    if key not in _GATHER:

        @tf.function
        def run(v):
            return strategy.run(lambda: tf.distribute.get_replica_context().all_gather(v[None], axis=0))

        _GATHER[key] = run
    out = _GATHER[key](tf.constant(values))
    return np.asarray(strategy.experimental_local_results(out)[0])


def barrier(strategy):
    """Returns once every worker has called it (one tiny collective).

    Call it at the end of a script before the chief saves and exits: a
    worker still running when the chief (which hosts TensorFlow's
    coordination service) has exited logs heartbeat errors.
    """
    _all_gather(strategy, [0.0])


def _rendezvous(info, timeout):
    """Waits until every other worker accepts TCP connections on its TF_CONFIG port, or exits.

    Each worker listens on its own port meanwhile (TensorFlow's server takes
    the port over right after), so all workers get past this at about the
    same time. A peer that does not answer within `timeout` seconds (down,
    unreachable, or started with a different TF_CONFIG) ends this process with
    exit code 3 and a message on stderr.
    """
    host, port = info.address.rsplit(":", 1)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("" if host not in ("127.0.0.1", "localhost") else host, int(port)))
    except OSError as e:
        listener.close()
        raise ValueError(f"tfq.distribute: cannot listen on this worker's address {info.address}: {e}") from None
    listener.listen(64)
    listener.settimeout(0.05)
    deadline = time.monotonic() + float(timeout)
    waiting = [a for a in info.workers if a != info.address]
    try:
        while waiting:
            try:  # accept (and drop) the others' probes
                listener.accept()[0].close()
            except OSError:
                pass
            still = []
            for addr in waiting:
                h, p = addr.rsplit(":", 1)
                try:
                    socket.create_connection((h, int(p)), timeout=0.2).close()
                except OSError:
                    still.append(addr)
            waiting = still
            if waiting and time.monotonic() > deadline:
                sys.stderr.write(
                    f"tfq.distribute: worker {info.rank} ({info.address}) could not form the cluster within "
                    f"{timeout:g} s: no answer from {waiting} (down, unreachable, or started with a different "
                    "TF_CONFIG); giving up\n"
                )
                sys.stderr.flush()
                os._exit(EXIT_STARTUP_TIMEOUT)
            time.sleep(0.05)
        # Linger a moment so that peers still probing see this port open.
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            try:
                listener.accept()[0].close()
            except OSError:
                pass
    finally:
        listener.close()


def multi_worker_strategy(startup_timeout=120.0, collective_timeout=120.0):
    """A `tf.distribute.MultiWorkerMirroredStrategy` from `TF_CONFIG`, with bounded waits.

    Checks `TF_CONFIG` first (`cluster_info`), then waits until every other
    worker answers on its port; a worker that cannot reach the others within
    `startup_timeout` seconds prints why to stderr and exits with code 3
    (TensorFlow itself waits up to an hour). Should a peer vanish between that
    and the strategy being up, faulthandler ends the process (exit code 1,
    with a traceback) after another `startup_timeout`.
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
    _rendezvous(info, startup_timeout)
    # Backstop once all peers answered: should one die before the strategy is
    # up, TensorFlow would wait an hour. A thread cannot help (the constructor
    # holds the GIL); faulthandler's timer is a C thread.
    faulthandler.dump_traceback_later(startup_timeout, exit=True)
    try:
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=float(collective_timeout))
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        seen = _all_gather(strategy, [_fingerprint(info)])[:, 0]
    finally:
        faulthandler.cancel_dump_traceback_later()
    if np.any(seen != seen[0]):
        raise ValueError(
            f"tfq.distribute: the workers were started with different TF_CONFIG clusters "
            f"(this worker: {list(info.workers)})"
        )
    if strategy.num_replicas_in_sync < info.num_workers:
        raise ValueError(f"expected at least {info.num_workers} replicas, got {strategy.num_replicas_in_sync}")
    return strategy


def prepare(model, strategy=None, sync_batch_norm=True):
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
        sync_batch_norm: set `synchronized=True` on every
            `keras.layers.BatchNormalization` (the public attribute its
            constructor sets, read at every call): batch statistics are then
            all-reduced over the global batch, so training matches one
            process over the same global batch and every worker's moving
            statistics stay identical (unsynchronized, each worker averages
            its own batches and the copies drift apart). It stays set in the
            saved config, where it changes nothing at inference.

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
    if sync_batch_norm:
        for layer in _all_layers(model):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True
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


def _all_layers(model):
    """Every layer of the model, nested models' layers included."""
    import keras

    out = []
    for layer in model.layers:
        out.append(layer)
        if isinstance(layer, keras.Model):
            out.extend(_all_layers(layer))
    return out


def _with_leading_axis(step):
    import keras

    def wrapped_step(data):
        logs = step(data)
        if not isinstance(logs, dict):
            return logs
        return {k: keras.ops.expand_dims(v, 0) if len(getattr(v, "shape", ())) == 0 else v for k, v in logs.items()}

    return wrapped_step


@contextlib.contextmanager
def worker_errors():
    """Turns TensorFlow's errors about a lost peer into one that says what happened and what to do.

    Use around `fit` on every worker. A worker that dies (or is killed)
    makes the collectives of the others fail within seconds
    (UnavailableError, "Connection reset by peer"), or after the collective
    timeout at the latest (DeadlineExceededError).
    """
    import tensorflow as tf

    lost = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
            tf.errors.CancelledError)
    try:
        yield
    except lost as e:
        info = cluster_info()
        first = (str(e.message).strip().splitlines() or [""])[0][:300]
        raise RuntimeError(
            f"tfq.distribute: worker {info.rank if info else 0} lost contact with the other workers "
            f"({type(e).__name__}: {first}). MultiWorkerMirroredStrategy cannot continue with fewer workers: "
            "restart every worker with the same TF_CONFIG; keras.callbacks.BackupAndRestore resumes "
            "from the last saved epoch"
        ) from e


def _state_variables(model):
    """(name, variable) of the model's weights, the optimizer's, and tfq's compression state."""
    out = [(f"model/{v.path}", v) for v in model.weights]
    opt = getattr(model, "optimizer", None)
    if opt is not None:
        out += [(f"optimizer/{v.path}", v) for v in opt.variables]
    for kind in (tfq_state.ADMM, tfq_state.PRUNING):
        state = tfq_state.get(model, kind)
        if state is not None:
            out += [(f"tfq_{kind}/{v.name}", v) for v in state.weights]
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
                when = "at the start of training" if epoch == "start" else f"after epoch {epoch}"
                raise RuntimeError(
                    f"tfq.distribute: {when} the workers hold different values of "
                    f"{len(bad)} variable(s), first {bad[0]!r}"
                )

        def on_train_begin(self, logs=None):
            # After BackupAndRestore (listed before this callback): every
            # worker must resume from the same state.
            self._check("start")

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
