"""A fault hook for testing recovery: inert unless ``SPARKANN_FAULTS`` is set.

The driver reads the environment variable ``SPARKANN_FAULTS`` (or the Spark conf
``spark.sparkann.faults``) when it starts a distributed job and ships the text with the task;
the executor compares it with the task it runs. With neither set, :func:`active_spec`
returns ``None`` and :func:`trigger` returns at once: nothing is injected in normal use.

Syntax: rules separated by ``;``, each ``action:key=value,key=value``::

    SPARKANN_FAULTS="fail_task:iteration=3,partition=1,attempt=0"
    SPARKANN_FAULTS="kill_executor:iteration=4,partition=0,attempt=0,pidfile=/tmp/pid"

Keys that select a task: ``iteration`` (the 0-based index of the distributed job the trainer
runs: a loss/gradient evaluation for l-bfgs and gd, a round for adam and sgd), ``partition``
and ``attempt`` (Spark's attempt number; 0 is the first). A key left out matches any value.

Actions:

``fail_task``
    Raise :class:`InjectedFault` in the task, which Spark then retries.

Any rule may add ``log=PATH``: a line is appended to that file each time the rule fires;
with ``times=N`` as well, the rule fires only while that file holds fewer than N lines (a
partition computed again after a kill does not wait to be killed a second time).
``kill_executor``
    Write the process id of the executor JVM that runs the task (the parent of the PySpark
    daemon that forked this worker) to ``pidfile``, then wait up to ``wait`` seconds (default
    60) so the test can kill that process while the task is running.
"""
import os
import time

ENV = "SPARKANN_FAULTS"
CONF = "spark.sparkann.faults"
ACTIONS = ("fail_task", "kill_executor")
SELECTORS = ("iteration", "partition", "attempt")


class InjectedFault(RuntimeError):
    """The failure a ``fail_task`` rule raises on purpose."""


def parse(spec):
    """``spec`` -> list of ``(action, {key: value})``; ValueError names a malformed rule."""
    rules = []
    for text in filter(None, (part.strip() for part in spec.split(";"))):
        action, _, args = text.partition(":")
        if action not in ACTIONS:
            raise ValueError(f"{ENV}: unknown action {action!r} in {text!r}; expected one of "
                             f"{ACTIONS}")
        fields = {}
        for item in filter(None, (a.strip() for a in args.split(","))):
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"{ENV}: expected key=value, received {item!r} in {text!r}")
            if key in SELECTORS or key in ("wait", "times"):
                try:
                    fields[key] = float(value) if key == "wait" else int(value)
                except ValueError:
                    raise ValueError(f"{ENV}: {key} must be a number, received {value!r}"
                                     ) from None
            elif key in ("pidfile", "log"):
                fields[key] = value
            else:
                raise ValueError(f"{ENV}: unknown key {key!r} in {text!r}")
        if "times" in fields and "log" not in fields:
            raise ValueError(f"{ENV}: times=N counts the lines of log=PATH, which {text!r} "
                             f"lacks")
        if action == "kill_executor" and "pidfile" not in fields:
            raise ValueError(f"{ENV}: kill_executor needs pidfile=PATH in {text!r}")
        rules.append((action, fields))
    return rules


def active_spec(spark=None):
    """Driver side: the fault rules to ship with tasks (validated), or None (the usual case).

    ``spark``: the SparkSession (classic or Connect) whose configuration may set them."""
    spec = os.environ.get(ENV)
    if not spec and spark is not None:
        from sparkann.spark.session import conf_value
        spec = conf_value(spark, CONF, None)
    if not spec:
        return None
    parse(spec)  # a typo must fail on the driver, not silently inject nothing
    return spec


def _executor_pid():
    """The JVM that owns this Python worker: worker -> PySpark daemon -> executor JVM."""
    daemon = os.getppid()
    with open(f"/proc/{daemon}/stat") as f:
        # Field 4 is the parent pid; the command name (field 2) may hold spaces in parentheses.
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _count_lines(path):
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def trigger(spec, iteration):
    """Executor side: run the rule that matches this task, if any (``spec`` None: no-op)."""
    if not spec:
        return
    from pyspark import TaskContext
    ctx = TaskContext.get()
    here = {"iteration": iteration, "partition": ctx.partitionId(),
            "attempt": ctx.attemptNumber()}
    for action, fields in parse(spec):
        if any(fields[k] != here[k] for k in SELECTORS if k in fields):
            continue
        if "times" in fields and _count_lines(fields["log"]) >= fields["times"]:
            continue
        if "log" in fields:
            with open(fields["log"], "a") as f:
                f.write(f"{action} {here}\n")
        if action == "fail_task":
            raise InjectedFault(f"injected task failure at {here}")
        pidfile = fields["pidfile"]
        jvm = _executor_pid()
        tmp = f"{pidfile}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(str(jvm))
        os.replace(tmp, pidfile)
        deadline = time.monotonic() + fields.get("wait", 60.0)
        while time.monotonic() < deadline:
            if not os.path.exists(f"/proc/{jvm}"):
                os._exit(1)  # the executor is gone: this worker has nobody to answer
            time.sleep(0.05)
