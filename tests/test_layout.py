import subprocess
import sys


def test_tasks_and_integrations_install_under_mlcodec():
    import mlcodec.integrations
    import mlcodec.tasks

    assert mlcodec.tasks.__name__ == "mlcodec.tasks"
    assert mlcodec.integrations.__name__ == "mlcodec.integrations"


def test_core_imports_neither_tasks_nor_integrations():
    code = (
        "import sys, mlcodec, mlcodec.cli, mlcodec.demo, mlcodec.train, mlcodec.codecs.hyperprior, "
        "mlcodec.codecs.pixel; "
        "bad = [m for m in sys.modules if m.startswith(('mlcodec.tasks', 'mlcodec.integrations'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_command_line_starts_without_the_task_models_libraries():
    """Building the parser loads every plugin's options, but not timm, ultralytics or ray: a
    command that trains no head (``info``, ``compress``, ``--version``) starts in the time torch
    takes to import."""
    code = (
        "import sys, mlcodec.cli; mlcodec.cli.build_parser(); "
        "heavy = [m for m in ('timm', 'ultralytics', 'ray', 'mlcodec.tasks.heads') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _module_imports() -> dict[str, set[str]]:
    """Every mlcodec module's imports of other mlcodec modules, at module level or inside
    functions (a lazy import is still a dependency), read from the source."""
    import ast
    from pathlib import Path

    root = Path(__file__).parent.parent
    packages = {"mlcodec": root / "mlcodec", "mlcodec.tasks": root / "tasks",
                "mlcodec.integrations": root / "integrations"}
    files = {}
    for pkg, folder in packages.items():
        for f in folder.rglob("*.py"):
            rel = f.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            files[".".join([pkg, *parts])] = (f, f.name == "__init__.py")
    graph: dict[str, set[str]] = {}
    for name, (f, is_pkg) in files.items():
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                # ``from pkg import submodule`` depends on the submodule, not on the package
                subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in files]
                cands = subs if len(subs) == len(node.names) else [mod, *subs]
            elif isinstance(node, ast.Import):
                cands = [a.name for a in node.names]
            else:
                continue
            deps |= {c for c in cands if c in files and c != name}
        graph[name] = deps
    return graph


def test_no_import_cycle():
    graph = _module_imports()
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
