"""The shape of the code, checked: layers point one way (the core never imports a shell), one
module owns SurrealQL, no module imports itself through others (nor a part of the code through
other parts), and functions and modules stay small enough to read (shared/STYLE.md, items 12
and 13)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).parents[1]
CORE = TOP / "image_search"
SHELLS = {"webui": TOP / "webui", "daemon": TOP / "daemon", "cli": TOP / "cli"}
MAX_FUNCTION = 60
MAX_MODULE = 400
LONG_MODULE_REASON = "Longer than 400 lines because"


def core_modules() -> list[str]:
    """Every module of the core: ``image_search`` but ``__main__`` (``python -m image_search``,
    which hands over to the command line)."""
    names = []
    for path in sorted(CORE.rglob("*.py")):
        rel = path.relative_to(TOP).with_suffix("")
        if rel.name == "__main__":
            continue
        names.append(".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts))
    return names


def module_name(path: Path) -> str:
    """A file's module as installed (the shells live inside ``image_search``)."""
    rel = path.relative_to(TOP).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts if parts[0] == "image_search" else ("image_search", *parts))


def package_of(path: Path) -> str:
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rsplit(".", 1)[0]


def imported_from(package: str, node: ast.ImportFrom) -> str:
    """The absolute name a ``from ... import`` in ``package`` reads from."""
    if not node.level:
        return node.module or ""
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions, as absolute names (with each
    name a ``from`` imports, as a possible module)."""
    package, found = package_of(path), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            absolute = imported_from(package, node)
            found.add(absolute)
            found.update(f"{absolute}.{alias.name}" for alias in node.names)
    return found


def all_files() -> list[Path]:
    return sorted([*CORE.rglob("*.py"), *(path for shell in SHELLS.values() for path in shell.rglob("*.py"))])


def test_importing_the_core_pulls_in_no_shell() -> None:
    """In a fresh interpreter, every core module imported: neither the web app nor the daemon nor
    the command line is loaded, nor any of aiohttp beyond the HTTP client that the SurrealDB SDK
    itself imports (``surrealdb/__init__`` loads it for its remote transport; aiohttp's server,
    ``aiohttp.web``, stays out)."""
    script = (
        "import importlib, json, sys\n"
        "import surrealdb\n"
        "sdk = {m for m in sys.modules if m.split('.')[0] == 'aiohttp'}\n"
        f"for name in {core_modules()!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if (m.split('.')[0] == 'aiohttp' and m not in sdk) "
        "or m.startswith(('aiohttp.web', 'image_search.webui', 'image_search.daemon', 'image_search.cli')))))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd="/", check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_no_core_module_imports_a_shell_even_lazily() -> None:
    shells = ("aiohttp", "image_search.webui", "image_search.daemon", "image_search.cli", "webui", "daemon")
    for name in core_modules():
        path = CORE.parent / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = CORE.parent / name.replace(".", "/") / "__init__.py"
        bad = {m for m in imports_of(path) if m.split(".")[0] in shells or m.startswith(shells)}
        assert not bad, f"{name} imports {sorted(bad)}"


def test_only_the_command_to_serve_imports_the_shells() -> None:
    for path in SHELLS["cli"].rglob("*.py"):
        shells = {m for m in imports_of(path) if m.startswith(("image_search.webui", "image_search.daemon"))}
        assert not shells or path.name == "serve.py", f"{path.name} imports {sorted(shells)}"


def test_the_daemon_and_the_web_app_do_not_import_each_other() -> None:
    for shell, other in (("webui", "image_search.daemon"), ("daemon", "image_search.webui")):
        for path in SHELLS[shell].rglob("*.py"):
            assert not {m for m in imports_of(path) if m.startswith(other)}, path


SURREALQL = re.compile(
    r"\b(SELECT\s.+\sFROM|UPSERT\s|INSERT\s+INTO|DELETE\s+\$|UPDATE\s+(\$|image|album)|DEFINE\s)"
)


def test_every_query_lives_in_the_store() -> None:
    for path in all_files():
        if path.is_relative_to(CORE / "store"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not SURREALQL.search(node.value), f"{path.relative_to(TOP)}: {node.value[:60]!r}"


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of this project it imports (at the top, inside functions or for
    type checking alone). ``from package import name`` is an arrow to ``package.name`` where that
    is a module, else to the package; importing a module from outside its package runs the
    package's ``__init__`` too."""
    modules = {module_name(path): path for path in all_files()}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = package_of(path)
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom):
                base = imported_from(package, node)
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    found.add(target if target in modules else base)
        found = {m for m in found if m in modules and m != name}
        found |= {
            parent
            for m in found
            for parent in (m.rsplit(".", k)[0] for k in range(1, m.count(".")))
            if parent in modules and not (name + ".").startswith(parent + ".") and parent != "image_search"
        }
        graph[name] = found
    return graph


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*trail, node, nxt]
            if nxt not in state and (found := visit(nxt, [*trail, node])):
                return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return None


def test_no_module_imports_itself_through_others() -> None:
    """No import cycles anywhere: core, shells, at any depth (lazy and type-only imports too)."""
    cycle = cycle_in(import_graph())
    assert cycle is None, "cycle: " + " -> ".join(cycle or [])


def test_arrows_between_parts_point_one_way() -> None:
    """Grouped by the core's sub-packages (and its single modules, and each shell), the imports
    form no cycle either: a part may use another, never the other way round as well."""

    def part(module: str) -> str:
        return ".".join(module.split(".")[:2])

    parts: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        parts.setdefault(part(module), set()).update(part(t) for t in targets if part(t) != part(module))
    cycle = cycle_in(parts)
    assert cycle is None, "parts in a cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("path", all_files(), ids=lambda p: str(p.relative_to(TOP)))
def test_functions_and_modules_stay_small(path: Path) -> None:
    text = path.read_text()
    tree = ast.parse(text)
    lines = len(text.splitlines())
    reason = LONG_MODULE_REASON in (ast.get_docstring(tree) or "")
    assert lines <= MAX_MODULE or reason, f"{lines} lines: split it, or say why in its docstring"
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            assert length <= MAX_FUNCTION, f"{node.name} is {length} lines"


FACES = sorted(p for p in CORE.glob("*/__init__.py") if "_face import face" in p.read_text())


def face_names(init: Path) -> dict[str, str]:
    """What a face names for type checkers: name -> the module that defines it."""
    return {
        alias.asname or alias.name: (node.module or alias.name)
        for node in ast.walk(ast.parse(init.read_text()))
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module != "_face"
        for alias in node.names
    }


@pytest.mark.parametrize("init", FACES, ids=lambda p: p.parent.name)
def test_a_face_loads_what_it_names_and_nothing_before(init: Path) -> None:
    """A sub-package's ``__init__`` loads exactly what it names for type checkers, each the
    object its module defines; importing the package loads none of its modules, nor torch."""
    package, typed = module_name(init), face_names(init)
    script = (
        "import importlib, json, sys\n"
        f"face = importlib.import_module({package!r})\n"
        f"loaded = sorted(m for m in sys.modules if m.startswith({package + '.'!r}))\n"
        "torch = 'torch' in sys.modules\n"
        "def own(n, m):\n"
        "    module = importlib.import_module(face.__name__ + '.' + m)\n"
        "    return module if n == m else getattr(module, n)\n"
        f"same = all(getattr(face, n) is own(n, m) for n, m in {typed!r}.items())\n"
        "print(json.dumps([face.__all__, loaded, same, torch]))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd="/", check=True)
    names, loaded, same, torch = json.loads(out.stdout.strip().splitlines()[-1])
    assert names == sorted(typed) and same
    assert (loaded, torch) == ([], False)


def test_the_shells_use_a_sub_package_through_its_face() -> None:
    """A whole module only where the face offers it (a namespace: the web app's album handlers
    share the names of the functions they call)."""
    faces = {module_name(init) for init in FACES}
    offered = {f"{module_name(init)}.{name}" for init in FACES for name in face_names(init)}
    graph = import_graph()
    for path in [
        *SHELLS["cli"].rglob("*.py"),
        *SHELLS["webui"].rglob("*.py"),
        *SHELLS["daemon"].rglob("*.py"),
    ]:
        inner = {m for m in graph[module_name(path)] if m.rsplit(".", 1)[0] in faces} - offered
        assert not inner, f"{path.relative_to(TOP)} imports {sorted(inner)}: name them in the face"
