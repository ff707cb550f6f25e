"""Project layout: no import cycles between the project's modules, the reporting package apart
from the training side, one shared module for atomic writes, versions and the machine, and every
bench/ script records the machine."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agents", "agscl", "common", "envs", "reporting", "supervised", "sweep")
#: The reporting package reads what runs wrote; it may import itself and common/ (atomic writes,
#: the CLI), and whatever common/ imports must keep to that too.
REPORTING_MAY_IMPORT = ("reporting", "common")
#: Libraries that build or train a network: reporting needs none of them (torch itself it may
#: use, to read checkpoint tensors and write TensorBoard events).
NETWORK_LIBRARIES = ("torch.nn", "torch.optim", "torch.distributions", "torch.func", "torchvision")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).glob("*.py")}


def module_imports(path: Path) -> set[str]:
    """Every name a file imports, anywhere in it (function-level imports too): ``import a.b``
    gives ``a.b``; ``from a.b import c`` gives ``a.b`` and ``a.b.c``; relative imports resolved."""
    name = _module_name(path)
    package = name.split(".") if path.stem == "__init__" else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join(parts + ([node.module] if node.module else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> project modules it imports anywhere in its file (function-level imports too:
    a cycle through a deferred import is still a cycle)."""
    modules = project_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for target in module_imports(path):
            if target in modules and target != name and not (name.startswith(target + ".") or target == name.split(".")[0]):
                graph[name].add(target)
    return graph


def boundary_violations(imports: dict[str, set[str]], package: str, allowed: tuple[str, ...],
                        libraries: tuple[str, ...]) -> list[str]:
    """``"module -> name"`` for every import that crosses ``package``'s boundary: from each of its
    modules, and from each project module they reach through allowed imports, an import of a
    project package outside ``allowed`` or of one of ``libraries`` (or a submodule of one).
    ``imports`` maps every project module to the names it imports (:func:`module_imports`)."""
    project = {m.split(".")[0] for m in imports}
    todo = [m for m in imports if m == package or m.startswith(package + ".")]
    seen, out = set(todo), set()
    while todo:
        module = todo.pop()
        for name in imports[module]:
            top = name.split(".")[0]
            if any(name == lib or name.startswith(lib + ".") for lib in libraries) or (top in project and top not in allowed):
                out.add(f"{module} -> {name}")
            elif name in imports and name not in seen:
                seen.add(name)
                todo.append(name)
    return sorted(out)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_hand_made_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_project_modules():
    graph = import_graph()
    assert "agents.rundir" in graph["agents.ppo_continual"] and "envs.atari" in graph["envs.suites"]
    assert cycles(graph) == []


def test_boundary_finder_finds_hand_made_crossings():
    imports = {"rep": set(), "rep.a": {"rep.b", "numpy", "torch"}, "rep.b": {"util", "util.x"},
               "util": {"train.loop"}, "train": set(), "train.loop": {"rep.a"}}
    assert boundary_violations(imports, "rep", ("rep", "util"), ("torch.nn",)) == ["util -> train.loop"]
    imports["rep.b"] |= {"torch.nn", "torch.nn.functional", "train"}
    assert boundary_violations(imports, "rep", ("rep", "util"), ("torch.nn",)) == [
        "rep.b -> torch.nn", "rep.b -> torch.nn.functional", "rep.b -> train", "util -> train.loop"]
    assert boundary_violations(imports, "train", ("train", "rep", "util"), ()) == []  # training may use reporting


def test_reporting_never_imports_the_training_side():
    """reporting/ (results, metrics, aggregation, normalization, plots, drift, TensorBoard) reads
    run files; it imports no trainer, network, environment, method or sweep, directly or through
    common/, and no library that builds a network (function-level imports count)."""
    imports = {name: module_imports(path) for name, path in project_modules().items()}
    assert {"reporting.results", "reporting.drift", "reporting.tensorboard_layout"} <= set(imports)
    assert "reporting.results" in imports["agents.ppo_continual"]  # the trainer writes through it
    assert boundary_violations(imports, "reporting", REPORTING_MAY_IMPORT, NETWORK_LIBRARIES) == []


def test_reporting_imports_alone():
    """Importing every reporting module loads no module of the training side (what the source
    check above cannot see: an import by name at run time)."""
    modules = sorted(m for m in project_modules() if m.split(".")[0] == "reporting")
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules) +
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {PACKAGES!r} and m.split('.')[0] not in {REPORTING_MAY_IMPORT!r}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_agents_and_supervised_share_one_writer_and_one_versions():
    import agents.runtime
    import common.runio as runio
    import reporting.results
    import supervised.report
    import supervised.train
    import sweep.launch

    # the old names stay importable and are the shared functions
    assert reporting.results.write_atomic is runio.write_atomic
    assert reporting.results.write_json_atomic is runio.write_json_atomic
    assert agents.runtime.versions is runio.versions
    assert supervised.train.versions().keys() == runio.versions().keys()
    for module in (reporting.results, agents.runtime, supervised.train, supervised.report, sweep.launch):
        assert "os.replace" not in Path(module.__file__).read_text(), f"{module.__name__} has its own atomic writer"


def test_atomic_writers_leave_only_the_file(tmp_path):
    from common.runio import write_bytes_atomic, write_json_atomic

    write_json_atomic(tmp_path / "a.json", {"x": 1})
    write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.bin"]
    assert (tmp_path / "a.json").read_text() == '{\n "x": 1\n}' and (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "c.json", {"x": float("nan")})  # strict JSON, and no temp file left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.bin"]


def test_machine_record_names_the_cpu_its_flags_and_threads(monkeypatch, tmp_path):
    from common import runio

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse4_2 avx avx2 avx512f avx512_bf16\n\n"
                       "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(cpuinfo if path == "/proc/cpuinfo" else path, *a, **k))
    m = runio.machine()
    assert m["cpu_model"] == "Test CPU 9000"
    assert m["cpu_flags"] == ["sse4_2", "avx", "avx2", "avx512f", "avx512_bf16"]
    assert m["torch_threads"] >= 1 and m["usable_cpus"] >= 1
    assert "Test CPU 9000" in runio.machine_line(m) and "avx512_bf16" in runio.machine_line(m)


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "bench").glob("*.py")))
def test_every_bench_script_records_the_machine(script):
    """Each bench script calls the one helper (its ratios mean little without the machine)."""
    tree = ast.parse((ROOT / "bench" / script).read_text())
    calls = {node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
             for node in ast.walk(tree) if isinstance(node, ast.Call)}
    assert "machine" in calls or "machine_line" in calls, f"bench/{script} does not record common.runio.machine()"
