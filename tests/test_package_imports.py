"""The package's import graph, read from the source: no cycles, and pyspark only under
``sparkann.spark`` (so ``import sparkann`` and everything outside ``sparkann.spark`` work
without it)."""
import ast
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python")
SPARK = "sparkann.spark"
# Command-line modules may start Spark work, and they and the MLflow flavor may read a model
# the Spark estimators saved, on request, importing sparkann.spark inside the function that
# needs it (never at module level).
SPARK_CALLERS = {"sparkann.scaling.cli", "sparkann.cli", "sparkann.mlflow"}


def _modules():
    found = {}
    for folder, _, files in os.walk(os.path.join(ROOT, "sparkann")):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                found[".".join(rel)] = os.path.join(folder, name)
    return found


MODULES = _modules()


def _is_package(module):
    return MODULES[module].endswith("__init__.py")


def _imports(module):
    """``(target, at_module_level)`` for every import statement in ``module``, functions
    included; relative imports resolved, ``from pkg import submodule`` read as the submodule."""
    tree = ast.parse(open(MODULES[module]).read(), MODULES[module])
    package = module if _is_package(module) else module.rpartition(".")[0]
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inside.update(id(n) for n in ast.walk(node) if n is not node)
    out = []
    for node in ast.walk(tree):
        top = id(node) not in inside
        if isinstance(node, ast.Import):
            out += [(a.name, top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub if sub in MODULES else base, top))
    return out


def _graph():
    """module -> sparkann modules it imports; importing ``a.b.c`` also runs ``a.b``'s
    ``__init__`` (counted unless the importer lives inside ``a.b`` already)."""
    graph = {}
    for module in MODULES:
        edges = set()
        for target, _ in _imports(module):
            while target in MODULES and not (module + ".").startswith(target + "."):
                edges.add(target)
                target = target.rpartition(".")[0]
        edges.discard(module)
        graph[module] = edges
    return graph


def _cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _in_spark(module):
    return module == SPARK or module.startswith(SPARK + ".")


def test_the_walk_sees_the_package():
    assert {"sparkann", "sparkann.cli", "sparkann.estimator", "sparkann.persist",
            "sparkann.scaling", SPARK, "sparkann.spark.model"} <= set(MODULES)
    graph = _graph()
    assert "sparkann.layers" in graph["sparkann.topology"]
    # importing sparkann.spark.calibration runs sparkann.spark/__init__ first
    assert {SPARK, "sparkann.spark.calibration"} <= graph["sparkann.scaling.cli"]


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_only_sparkann_spark_imports_pyspark():
    wrong = [(m, t) for m in MODULES if not _in_spark(m) for t, _ in _imports(m)
             if t == "pyspark" or t.startswith("pyspark.")]
    assert wrong == []


def test_outside_sparkann_spark_nothing_imports_it_at_module_level():
    wrong = [(m, t) for m in MODULES if not _in_spark(m) for t, top in _imports(m)
             if _in_spark(t) and (top or m not in SPARK_CALLERS)]
    assert wrong == []


def test_every_module_outside_sparkann_spark_imports_without_pyspark():
    names = sorted(m for m in MODULES if not _in_spark(m) and not m.endswith(".__main__"))
    code = ("import importlib, sys\nsys.modules['pyspark'] = None\n"
            f"for name in {names!r}:\n    importlib.import_module(name)\n"
            "assert not any(m.startswith('pyspark') and sys.modules[m] is not None "
            "for m in sys.modules)\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr

