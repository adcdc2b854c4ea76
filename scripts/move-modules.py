#!/usr/bin/env python3
"""Move core modules into a sub-package and rewrite every import of them, nothing else.

    python scripts/move-modules.py pictures imaging raw thumbs ...     # image_search/X.py -> pictures/X.py
    python scripts/move-modules.py indexing indexing=seam indexer ...  # indexing.py -> indexing/seam.py
    python scripts/move-modules.py --face pictures                     # its __init__ from the shells' use

Each module moves with ``git mv`` (so ``git log --follow`` and blame keep its history); in every
Python file of the repository (the moved ones included) the import statements that name a moved
module are rewritten in place, relative ones staying relative; dotted names and paths of the moved
modules in strings, comments and documents are rewritten too. Import order is left to ``ruff check
--fix``.

``--face`` then writes the package's ``__init__`` (keeping its docstring): the names the shells
(the command line, the web app, the daemon) import from its modules, loaded on first use
(:mod:`image_search._face`), and rewrites those imports to name the package; run ``ruff format``
after it.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
CORE = "image_search"
SHELLS = {"webui": "image_search.webui", "daemon": "image_search.daemon", "cli": "image_search.cli"}


def module_of(path: Path) -> str:
    rel = path.relative_to(TOP).with_suffix("")
    parts = list(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
    if parts and parts[0] in SHELLS:
        parts = SHELLS[parts[0]].split(".") + parts[1:]
    return ".".join(parts)


def package_of(path: Path, module: str) -> str:
    return module if path.name == "__init__.py" else module.rsplit(".", 1)[0]


def relative(from_package: str, target: str) -> str:
    """``target`` as seen from ``from_package``: dots and the rest."""
    here, there = from_package.split("."), target.split(".")
    common = 0
    while common < min(len(here), len(there)) and here[common] == there[common]:
        common += 1
    return "." * (len(here) - common + 1) + ".".join(there[common:])


def _as(name: str | None) -> str:
    return f" as {name}" if name else ""


def rewrite(path: Path, moves: dict[str, str], old_module: str, new_module: str) -> str | None:
    text = path.read_text()
    tree = ast.parse(text)
    old_package, new_package = package_of(path, old_module), package_of(path, new_module)
    lines = text.splitlines(keepends=True)
    edits: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom | ast.Import):
            continue
        indent = re.match(r"\s*", lines[node.lineno - 1]).group(0)  # type: ignore[union-attr]
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
            if not any(n in moves for n in names):
                continue
            new = ", ".join(moves.get(a.name, a.name) + _as(a.asname) for a in node.names)
            edits.append((node.lineno, node.end_lineno or node.lineno, f"{indent}import {new}\n"))
            continue
        if node.level:
            base = old_package.rsplit(".", node.level - 1)[0] if node.level > 1 else old_package
            base = f"{base}.{node.module}" if node.module else base
        else:
            base = node.module or ""
        groups: dict[str, list[str]] = {}
        changed = False
        for alias in node.names:
            name = alias.name + (f" as {alias.asname}" if alias.asname else "")
            as_module = f"{base}.{alias.name}"
            if as_module in moves:  # "from package import module"
                target, _, leaf = moves[as_module].rpartition(".")
                name = leaf + _as(alias.asname or (alias.name if leaf != alias.name else None))
                groups.setdefault(target, []).append(name)
                changed = True
            elif base in moves:
                groups.setdefault(moves[base], []).append(name)
                changed = True
            else:
                groups.setdefault(base, []).append(name)
        if not changed and not (node.level and old_package != new_package):
            continue
        out = []
        for target, names in groups.items():
            where = relative(new_package, target) if node.level else target
            out.append(f"{indent}from {where} import {', '.join(names)}\n")
        edits.append((node.lineno, node.end_lineno or node.lineno, "".join(out)))
    if not edits:
        return None
    for start, end, new in sorted(edits, reverse=True):
        lines[start - 1 : end] = [new.rstrip("\n") + _comment(lines[end - 1]) + "\n"]
    return "".join(lines)


def _comment(line: str) -> str:
    """A trailing comment of an import's last line (``# noqa: E402``), kept."""
    found = re.search(r"\)?\s*(#.*)$", line.rstrip("\n"))
    return "  " + found.group(1) if found else ""


def main(package: str, specs: list[str]) -> None:
    moves: dict[str, str] = {}
    for spec in specs:
        old, _, new = spec.partition("=")
        moves[f"{CORE}.{old}"] = f"{CORE}.{package}.{new or old}"
    files = [p for p in TOP.rglob("*.py") if not {".venv", "build", "node_modules", ".git"} & set(p.parts)]
    where = {module_of(p): p for p in files}
    old_names = {p: module_of(p) for p in files}
    (TOP / CORE / package).mkdir(exist_ok=True)
    for old, new in moves.items():
        src = where[old]
        dest = TOP / Path(*new.split(".")).with_suffix(".py")
        subprocess.run(["git", "mv", str(src), str(dest)], cwd=TOP, check=True)
        old_names[dest] = old_names.pop(src)
    for path, old_module in old_names.items():
        new_module = module_of(path)
        text = rewrite(path, moves, old_module, new_module)
        if text is not None:
            path.write_text(text)
    # Dotted names and paths elsewhere (strings, comments, documents, scripts).
    documents = [p for p in TOP.rglob("*") if p.suffix in {".py", ".md", ".toml", ".cfg", ".txt", ""}]
    documents = [
        p
        for p in documents
        if p.is_file() and not {".venv", "build", "node_modules", ".git", "shared"} & set(p.parts)
    ]
    for path in documents:
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        new_text = text
        for old, new in moves.items():
            # A module becoming its own package's module (duplicates -> duplicates/grouping): the
            # package's other modules, already named by the imports rewritten above, keep their name.
            inside = [m.rsplit(".", 1)[1] for m in moves.values() if m.startswith(old + ".")]
            keep = rf"(?!\.(?:{'|'.join(inside)})\b)" if inside else ""
            new_text = re.sub(rf"(?<![\w.]){re.escape(old)}(?![\w]){keep}", new, new_text)
            old_path, new_path = old.replace(".", "/") + ".py", new.replace(".", "/") + ".py"
            new_text = re.sub(rf"(?<![\w/]){re.escape(old_path)}", new_path, new_text)
        if new_text != text:
            path.write_text(new_text)


def _top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


SHELL_DIRS = ("cli", "webui", "daemon")


def shell_files() -> list[Path]:
    return sorted(p for d in SHELL_DIRS for p in (TOP / d).rglob("*.py"))


def face(package: str) -> None:
    full = f"{CORE}.{package}"
    used: dict[str, str] = {}  # name -> module
    modules = {p.stem for p in (TOP / CORE / package).glob("*.py")}
    defined = {
        name: path.stem
        for path in (TOP / CORE / package).glob("*.py")
        if path.name != "__init__.py"
        for name in _top_level_names(path)
    }
    plans = []
    for path in shell_files():
        module = module_of(path)
        here = package_of(path, module)
        text = path.read_text()
        lines = text.splitlines(keepends=True)
        edits = []
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
            base = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
            if base == full:  # already through the face: where each name is defined
                used.update({a.name: defined[a.name] for a in node.names if a.name in defined})
                used.update({a.name: a.name for a in node.names if a.name in modules})
                continue
            if not base.startswith(full + ".") or base.count(".") != full.count(".") + 1:
                continue
            leaf = base.rsplit(".", 1)[1]
            for alias in node.names:
                used[alias.name] = leaf
            indent = re.match(r"\s*", lines[node.lineno - 1]).group(0)  # type: ignore[union-attr]
            where = relative(here, full) if node.level else full
            names = ", ".join(a.name + _as(a.asname) for a in node.names)
            edits.append(
                (node.lineno, node.end_lineno or node.lineno, f"{indent}from {where} import {names}\n")
            )
        if edits:
            for start, end, new in sorted(edits, reverse=True):
                lines[start - 1 : end] = [new]
            plans.append((path, "".join(lines)))
    for path, text in plans:
        path.write_text(text)
    init = TOP / CORE / package / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text())) if init.exists() else None
    by_module: dict[str, list[str]] = {}
    for name, leaf in sorted(used.items()):
        by_module.setdefault("" if name == leaf else leaf, []).append(name)
    typed = "".join(
        f"    from .{leaf} import {', '.join(names)}\n" for leaf, names in sorted(by_module.items())
    )
    offered: dict[str, list[str]] = {}
    for name, leaf in sorted(used.items(), key=lambda item: (item[1], item[0] != item[1], item[0])):
        offered.setdefault(leaf, []).append(name)
    table = "".join(f"        {leaf}={(*names,)!r},\n" for leaf, names in sorted(offered.items()))
    init.write_text(
        f'"""{doc or package}\n"""\n\n'
        "from __future__ import annotations\n\n"
        "from typing import TYPE_CHECKING\n\n"
        "from .._face import face\n\n"
        "if TYPE_CHECKING:  # what the shells use, named for readers and type checkers\n"
        f"{typed}"
        "else:  # loaded on first use (image_search/_face.py)\n"
        f"    __getattr__, __all__ = face(\n        __name__,\n{table}    )\n"
    )


if __name__ == "__main__":
    if sys.argv[1] == "--face":
        face(sys.argv[2])
    else:
        main(sys.argv[1], sys.argv[2:])
