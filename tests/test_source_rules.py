"""Rules on the package's source as a whole: no two modules import each other, directly or around a longer circle
(lazy imports inside functions included: they hide a circle from Python, not from a reader); no private attributes
of other libraries where a public one says the same."""

import ast
import re
from pathlib import Path

import dpo_ext

PACKAGE = Path(dpo_ext.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package's modules it imports (``from a.b import c`` counts as ``a.b.c`` when that is a module)."""
    modules = {module_name(path): path for path in package.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules:
                edges |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                          for a in node.names}
            elif isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
        graph[name] = edges - {name}
    return graph


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle ``[a, b, ..., a]``, or `None` (depth-first search, in sorted order so failures repeat)."""
    state = {}  # module -> "open" while on the current path, "done" once all it reaches was searched

    def visit(module, path):
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                return path[path.index(imported):] + [imported]
            if imported not in state:
                found = visit(imported, path + [imported])
                if found:
                    return found
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module, [module])
            if found:
                return found
    return None


def test_the_circle_finder_finds_a_circle():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle_in_the_package():
    graph = import_graph()
    assert "dpo_ext.data.tokenize" in graph["dpo_ext.data.validation"]  # the graph sees imports at all
    assert find_circle(graph) is None, f"import circle: {' -> '.join(find_circle(graph))}"


def test_the_model_name_is_read_from_the_public_attribute():
    """``model.name_or_path`` (transformers' public property), not the config's private ``_name_or_path``."""
    private = re.compile(r"[\"'.]_name_or_path\b")
    found = [f"{path.relative_to(PACKAGE.parent)}:{number}" for path in sorted(PACKAGE.rglob("*.py"))
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if private.search(line)]
    assert not found, f"private config._name_or_path read at {found}; use model.name_or_path"
