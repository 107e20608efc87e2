"""The house's rules, read from the code's own imports (docs/architecture.md, "Data flow and its rules")."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "service" / "parakeet_serve"
FRONTS = ("riva", "http", "wyoming")
CORE = ("recognizer", "session", "scheduler")
WINGS = ("engine.nemo", "engine.onnx")


def modules() -> dict[str, set[str]]:
    """Each module of the package (dotted, without `parakeet_serve.`) and the package modules it imports."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    imports: dict[str, set[str]] = {}
    for name, path in names.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("parakeet_serve"):
                base = node.module.removeprefix("parakeet_serve").removeprefix(".")
                found |= {f"{base}.{a.name}".lstrip(".") for a in node.names} & names.keys() or {base} & names.keys()
        imports[name] = found - {name}
    return imports


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_no_module_imports_itself_back_through_others() -> None:
    graph = modules()

    def reachable(start: str) -> set[str]:
        seen, todo = set(), list(graph[start])
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo.extend(graph[module])
        return seen

    assert not [m for m in graph if m in reachable(m)]


def test_imports_run_downwards_fronts_to_core_to_engine_to_its_wings() -> None:
    graph = modules()
    for module, imported in graph.items():
        for target in imported:
            if within(module, ("engine",)):
                assert not within(target, (*FRONTS, *CORE, "app")), f"{module} imports {target}, above it"
            if within(module, CORE):
                assert not within(target, (*FRONTS, "app")), f"{module} imports {target}, a front end"
            if within(target, WINGS) and not within(module, ("engine",)):
                raise AssertionError(f"{module} imports the backend module {target}: go through engine/")
            if within(module, FRONTS):
                others = tuple(f for f in FRONTS if not within(module, (f,)))
                assert not within(target, others), f"{module} imports another front end's {target}"


def test_the_onnx_wing_never_needs_pytorch_or_nemo() -> None:
    for path in (PACKAGE / "engine" / "onnx").glob("*.py"):
        tree = ast.parse(path.read_text())
        roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        roots |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                  and n.module.startswith("parakeet_serve.engine.nemo")}
        assert not roots & {"torch", "nemo", "parakeet_serve.engine.nemo"}, path.name
