"""A whole full-batch fit (l-bfgs or gd) in one Spark query.

On the per-query path (:mod:`sparkann.spark.gradient`) every gradient is one Spark job, and
in a Spark Connect session one query as well, which the server plans and answers through the
client: measured here (60,000 rows, local[2]) 120-270 ms per gradient beside the job itself.
Spark MLlib's loop runs inside the server and pays none of the query costs. So a fit with
nothing to do on the driver between iterations (no callback, validation set, checkpoint or
fault rule) runs as one barrier ``mapInArrow`` over the cached handles, in both session
kinds: Spark starts a task for every partition at once; partition 0's task runs the solver,
and every other task computes its partition's partial gradient at the weights that task
sends it and sends it back. They talk over TCP connections opened once per fit: the
leader's address and a secret go round in one ``allGather``, which is too slow to carry the
gradients (each ``allGather`` waits about a second: Spark polls the barrier once a second).
Partial gradients add up in float64 in partition order, as the reduce-scatter of the
per-query path adds them.

A partition whose task runs away from its stacked file, a fit with more partitions than
the cluster runs at once, or a session with dynamic allocation (barrier stages refuse it)
keeps the per-query path, as does setting ``spark.sparkann.oneQueryFit`` to ``false``.
"""
import json
import logging
import pickle
import secrets
import socket
import struct
import time

import numpy as np

from sparkann import optim
from sparkann.spark.gradient import LossGrad, partition_loss_grad

log = logging.getLogger("sparkann.spark")

CONF = "spark.sparkann.oneQueryFit"
RESULT_SCHEMA = "result binary"
SOLVERS = ("lbfgs", "gd")
_HEADER = struct.Struct("!cQ")       # message kind, payload bytes
_WEIGHTS, _PARTIAL, _STOP = b"W", b"P", b"S"
CONNECT_SECONDS = 120.0              # how long tasks wait for each other to connect


def usable(trainer):
    """Whether ``trainer`` (a :class:`~sparkann.spark.train.Trainer`) can fit in one query."""
    from sparkann.spark.data import _default_parallelism
    from sparkann.spark.session import conf_value, task_cpus
    blocks = trainer.blocks
    if not (trainer.solver in SOLVERS and trainer.callback is None
            and trainer.validation is None and trainer.checkpoint is None
            and trainer.loss_grad.faults is None):
        return False
    session = blocks.session
    if str(session.conf.get(CONF, "true")).lower() == "false":   # settable at run time
        return False
    if str(conf_value(session, "spark.dynamicAllocation.enabled", "false")).lower() == "true":
        return False
    # A barrier stage needs a slot for every task at once (Spark would wait, then fail).
    slots = _default_parallelism(session) // task_cpus(session)
    return 1 <= blocks.n_partitions <= slots


def fit(trainer, w0):
    """Run ``trainer``'s solver from ``w0`` in one query; return the final weights, or None
    when a partition's stacked file was not found (the caller then takes the per-query path).

    Fills in the trainer's history, iteration seconds and its loss function's per-gradient
    seconds as the per-query path does; raises what the solver raised (with the weights of a
    :class:`~sparkann.optim.DivergenceError`).
    """
    loss_grad = trainer.loss_grad
    spec = dict(layout=trainer.blocks.layout, n_rows=trainer.blocks.n_rows,
                solver=trainer.solver, max_iter=trainer.max_iter, tol=trainer.tol,
                step_size=trainer.step_size, task=loss_grad.task_spec())
    w0 = np.asarray(w0, np.float64)

    def run(batches):
        return barrier_task(batches, w0, spec)

    table = trainer.blocks.handles.mapInArrow(run, RESULT_SCHEMA, barrier=True).toArrow()
    results = [pickle.loads(v) for v in table.column("result").to_pylist() if v]
    if len(results) != 1:
        raise RuntimeError(f"the one-query fit returned {len(results)} results, expected 1")
    result = results[0]
    if result.get("missing"):
        log.warning("partition(s) %s ran away from their stacked data; fitting with a job "
                    "per gradient instead", result["missing"])
        return None
    log.info("fitted in one query: %d gradients", len(result["gradient_seconds"]))
    loss_grad.seconds.extend(result["gradient_seconds"])
    loss_grad.evaluations += len(result["gradient_seconds"])
    for iteration, loss, seconds in result["iterations"]:
        trainer.history.append(loss)
        trainer.seconds.append(seconds)
        log.info(f"iteration {iteration}  loss {loss:.6f}  seconds {seconds:.3f}")
    if "error" in result:
        raise _rebuilt(result["error"])
    return result["weights"]


def _rebuilt(error):
    kind, message, weights, iteration = error
    if kind == "DivergenceError":
        return optim.DivergenceError(message, weights=weights, iteration=iteration)
    return {"FloatingPointError": FloatingPointError, "ValueError": ValueError}.get(
        kind, RuntimeError)(message)


# ------------------------------------------------------------------------- executor side

def barrier_task(batches, w0, spec):
    """Executor side: one task of the barrier stage; partition 0's yields the result."""
    from pyspark import BarrierTaskContext

    from sparkann.spark import resident
    context = BarrierTaskContext.get()
    handles = [h for b in batches
               for h in zip(*(b.column(i).to_pylist() for i in range(b.num_columns)))]
    blocks, missing = [], []
    for handle in handles:
        opened = resident.open_partition(handle, spec["layout"], whole=True)
        if opened is None:
            missing.append(handle[0])
        else:
            blocks += opened
    leader = context.partitionId() == 0
    listener = _listen() if leader else None
    secret = secrets.token_hex(16) if leader else ""
    host = context.getTaskInfos()[0].address.rsplit(":", 1)[0]
    port = listener.getsockname()[1] if leader else 0
    notes = [json.loads(m) for m in context.allGather(json.dumps(
        {"missing": missing, "port": port, "secret": secret}))]
    missing = sorted(p for note in notes for p in note["missing"])
    if missing:    # every task sees it: all leave, the driver takes the per-query path
        if leader:
            listener.close()
            yield _row({"missing": missing})
        return
    task = spec["task"]
    if not leader:
        _follow(blocks, (host, notes[0]["port"]), notes[0]["secret"], context.partitionId(),
                task)
        return
    try:
        peers = _accept(listener, secret, len(notes) - 1)
    finally:
        listener.close()
    try:
        yield _row(_lead(blocks, peers, w0, spec))
    finally:
        for peer in peers:
            peer.close()


def _lead(blocks, peers, w0, spec):
    """Run the solver; every evaluation sends the weights to ``peers`` (in partition order)
    and adds their partials to this partition's."""
    record, last = [], time.perf_counter()

    def on_iteration(iteration, w, loss):
        nonlocal last
        now = time.perf_counter()
        record.append((iteration, float(loss), now - last))
        last = now

    loss_grad = ExchangedLossGrad(blocks, peers, spec["task"], spec["n_rows"])
    result = {"iterations": record, "gradient_seconds": loss_grad.seconds}
    try:
        result["weights"] = minimize_full_batch(
            spec["solver"], loss_grad, w0, max_iter=spec["max_iter"], tol=spec["tol"],
            step_size=spec["step_size"], callback=on_iteration)
    except (FloatingPointError, RuntimeError, ValueError) as error:
        result["error"] = (type(error).__name__, str(error), getattr(error, "weights", None),
                           getattr(error, "iteration", None))
    finally:
        for peer in peers:
            try:
                _send(peer, _STOP)
            except OSError:   # that task already failed; its error is the one Spark reports
                pass
    return result


def minimize_full_batch(solver, loss_grad, w0, *, max_iter, tol, step_size, callback,
                        start=0, lbfgs=None):
    """The Spark estimators' full-batch solvers: l-bfgs (``lbfgs``: an ``optim.LBFGS`` of
    ``loss_grad`` already made, e.g. resumed from a checkpoint) or gd with Spark MLlib's
    ``stepSize / sqrt(iteration)``; ``callback(iteration, w, loss)`` counts iterations on
    from ``start``. Returns the final weights."""
    from sparkann.spark.checkpointing import ShiftedSchedule
    if solver == "lbfgs":
        lbfgs = lbfgs if lbfgs is not None else optim.LBFGS(loss_grad, w0)
        return lbfgs.minimize(max_iter, tol, callback=callback).x
    return optim.gd(loss_grad, w0, step_size=step_size, max_iter=max_iter - start, tol=tol,
                    callback=lambda i, w, loss: callback(start + i, w, loss),
                    schedule=ShiftedSchedule(optim.InverseSqrt(), start)).x


class ExchangedLossGrad(LossGrad):
    """Executor side: the mean loss and gradient over every partition, this task's blocks
    computed here and the others' by the tasks at the far end of ``peers``."""

    def __init__(self, blocks, peers, task, n_rows):
        super().__init__(task["network"][1], task["reg_param"], task["l2_mask"])
        self.blocks, self.peers, self.task, self.n_rows = blocks, peers, task, n_rows

    def sums(self, weights):
        start = time.perf_counter()
        w_cast = self.cast(weights)
        for peer in self.peers:
            _send(peer, _WEIGHTS, w_cast)
        partials = [_partial(self.blocks, w_cast, self.task)]
        partials += [_receive(peer, _PARTIAL) for peer in self.peers]
        grad = np.zeros(w_cast.size, np.float64)
        loss = weight = 0.0
        rows = 0
        for payload in partials:
            values = np.frombuffer(payload, np.uint8)
            grad += values[:-24].view(w_cast.dtype)
            part_loss, part_rows, part_weight = values[-24:].view(np.float64)
            loss, rows, weight = loss + part_loss, rows + int(part_rows), weight + part_weight
        self.evaluations += 1
        self.seconds.append(time.perf_counter() - start)
        self.check_rows(rows, self.n_rows)
        return loss, grad, weight


def _partial(blocks, w_cast, task):
    """This partition's partial gradient then its loss sum, rows and weight sum, as bytes."""
    loss, grad, rows, weight = next(partition_loss_grad(blocks, w_cast, *task["network"]))
    return grad.tobytes() + np.array([loss, rows, weight], np.float64).tobytes()


def _follow(blocks, address, secret, partition, task):
    """A task other than partition 0's: partial gradients at the weights it is sent, until
    told to stop."""
    peer = socket.create_connection(address, timeout=CONNECT_SECONDS)
    try:
        peer.settimeout(None)   # an evaluation takes as long as the leader's partition does
        _no_delay(peer)
        peer.sendall(struct.pack("!32sI", secret.encode(), partition))
        dtype = np.dtype(task["dtype"])
        while True:
            kind, payload = _receive_any(peer)
            if kind == _STOP:
                return
            _send(peer, _PARTIAL, _partial(blocks, np.frombuffer(payload, dtype), task))
    finally:
        peer.close()


def _listen():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("", 0))
    listener.listen()
    listener.settimeout(CONNECT_SECONDS)
    return listener


def _accept(listener, secret, count):
    """The ``count`` other tasks' connections, in partition order; refuses a stranger."""
    peers = {}
    try:
        while len(peers) < count:
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                raise RuntimeError(f"{count - len(peers)} task(s) of the one-query fit did not "
                                   f"connect within {CONNECT_SECONDS:.0f} s") from None
            conn.settimeout(CONNECT_SECONDS)
            hello = _exactly(conn, 36)
            token, partition = struct.unpack("!32sI", hello)
            if not secrets.compare_digest(token, secret.encode()):
                conn.close()
                continue
            conn.settimeout(None)
            _no_delay(conn)
            peers[partition] = conn
    except BaseException:
        for conn in peers.values():
            conn.close()
        raise
    return [peers[p] for p in sorted(peers)]


def _no_delay(peer):
    # Small messages (a stop, a small network's weights) go out at once, not after the
    # delayed acknowledgement of the previous one (40 ms each way on Linux).
    peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _send(peer, kind, payload=b""):
    view = memoryview(payload).cast("B") if not isinstance(payload, bytes) else payload
    peer.sendall(_HEADER.pack(kind, len(view)))
    if len(view):
        peer.sendall(view)


def _receive_any(peer):
    kind, size = _HEADER.unpack(_exactly(peer, _HEADER.size))
    return kind, _exactly(peer, size)


def _receive(peer, kind):
    got, payload = _receive_any(peer)
    if got != kind:
        raise RuntimeError(f"the one-query fit expected a {kind!r} message, received {got!r}")
    return payload


def _exactly(peer, size):
    """``size`` bytes from ``peer``; a peer that went away (its task failed) is an error."""
    buf = bytearray(size)
    view, got = memoryview(buf), 0
    while got < size:
        n = peer.recv_into(view[got:])
        if n == 0:
            raise ConnectionError("a task of the one-query fit closed its connection (it "
                                  "failed or was killed)")
        got += n
    return buf


def _row(value):
    import pyarrow as pa
    return pa.RecordBatch.from_arrays([pa.array([pickle.dumps(value)], pa.binary())],
                                      names=["result"])

