"""The package's layers: which subpackage may import which, no import cycles, small modules.

The rules here are the ones each subpackage's docstring states. Every import counts, those
inside functions too: a lazy import hides a dependency from a reader no less than a cycle does.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from processes import REPO

ROOTS = {"inference_api": REPO / "inference-api", "proxy": REPO / "proxy", "common": REPO / "common"}
LEAVES = {"config", "sampling_params", "process_messages", "quote"}
# What each part of the code may import from the project, top of the server to the bottom of
# the backend; a part always may import from itself. "leaves" are the shared modules at the
# package's root, which import nothing but each other and `common`.
MAY_IMPORT = {
    "http": {"serving", "leaves", "common"},
    "serving": {"backend", "leaves", "common"},
    "backend": {"engine", "model", "mock", "leaves"},
    "model": {"engine", "sampling", "leaves"},
    "mock": {"engine", "sampling", "leaves"},
    "engine": {"leaves"},
    "sampling": {"leaves"},
    "leaves": {"leaves", "common"},
    "proxy": {"common"},
    "common": set(),
}
HTTP_LIBRARIES = {"flask", "werkzeug", "gunicorn"}
# The server process and the mock backend run without torch; the model and the sampler need it.
TORCH_LIBRARIES = {"torch", "numpy", "transformers"}
TORCH_ALLOWED = {"model", "sampling"}
TORCH_FREE_MODULES = {"inference_api.sampling.closing"}  # the mock's grammars use it
MAX_MODULE_LINES = 250


def module_files() -> dict[str, Path]:
    """Every module of the three packages by its dotted name."""
    found = {}
    for package, root in ROOTS.items():
        for path in root.rglob("*.py"):
            if "." in path.stem:  # gunicorn.conf.py: a settings file gunicorn reads, no module
                continue
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


MODULES = module_files()


def part_of(module: str) -> str:
    """The layer a module belongs to: its subpackage, "leaves", "proxy" or "common"."""
    package, *rest = module.split(".")
    if package != "inference_api":
        return package
    if not rest or (len(rest) == 1 and rest[0] in LEAVES):
        return "leaves"
    return rest[0]


def imports_of(module: str) -> list[tuple[str, int]]:
    """(imported name, line) for every import in the module, at any depth; relative ones resolved."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from package import module` names a module
                name = f"{base}.{alias.name}"
                found.append((name if name in MODULES else base, node.lineno))
    return found


def project_imports(module: str) -> list[tuple[str, int]]:
    """The project's modules this module imports (the deepest module each import names)."""
    found = []
    for name, line in imports_of(module):
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.append((name, line))
    return found


def test_every_module_is_in_a_layer_with_a_rule():
    assert {part_of(m) for m in MODULES} <= set(MAY_IMPORT), \
        sorted({part_of(m) for m in MODULES} - set(MAY_IMPORT))
    assert len(MODULES) > 40  # the discovery found the packages


def test_each_layer_imports_only_what_its_rule_allows():
    wrong = [f"{MODULES[m].relative_to(REPO)}:{line} ({part_of(m)}) imports {name} "
             f"({part_of(name)})"
             for m in MODULES for name, line in project_imports(m)
             if part_of(name) != part_of(m) and part_of(name) not in MAY_IMPORT[part_of(m)]]
    assert not wrong, "\n".join(wrong)


def test_only_the_http_side_imports_flask_or_gunicorn():
    wrong = [f"{MODULES[m].relative_to(REPO)}:{line} imports {name}"
             for m in MODULES if part_of(m) not in ("http", "proxy")
             for name, line in imports_of(m) if name.split(".")[0] in HTTP_LIBRARIES]
    assert not wrong, "\n".join(wrong)


def test_torch_stays_in_the_model_and_the_sampler():
    wrong = [f"{MODULES[m].relative_to(REPO)}:{line} imports {name}"
             for m in MODULES if part_of(m) not in TORCH_ALLOWED or m in TORCH_FREE_MODULES
             for name, line in imports_of(m) if name.split(".")[0] in TORCH_LIBRARIES]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_between_modules():
    graph = {m: sorted({name for name, _ in project_imports(m)}) for m in MODULES}
    state: dict[str, str] = {}
    cycles = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for name in graph[module]:
            if state.get(name) == "open":
                cycles.append(" -> ".join(trail[trail.index(name):] + [module, name]))
            elif name not in state:
                visit(name, trail + [module] if name not in trail else trail)
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [])
    assert not cycles, "\n".join(cycles)


def test_a_package_does_not_import_the_package_that_contains_it():
    # An __init__ that imports its own modules would run them whenever any one of them is
    # imported: each subpackage's __init__ is a docstring alone.
    inits = [m for m, path in MODULES.items() if path.name == "__init__.py"]
    assert all(not imports_of(m) for m in inits), [m for m in inits if imports_of(m)]


@pytest.mark.parametrize("package", sorted(m for m, path in MODULES.items()
                                           if path.name == "__init__.py"))
def test_every_package_says_what_it_owns(package):
    init = MODULES[package]
    docstring = ast.get_docstring(ast.parse(init.read_text())) or ""
    assert len(docstring.split()) >= 20, f"{init.relative_to(REPO)} needs a docstring saying " \
                                         f"what the package owns and what it may import"


def test_no_module_is_over_the_size_a_reader_takes_in():
    long = {str(path.relative_to(REPO)): n for path in MODULES.values()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"over {MAX_MODULE_LINES} lines: {long}"
