"""The package's floors: every import points down, never sideways or up.

From the bottom: `errors`; the file and hub helpers; the data, the model and the runtime
(none of which knows the others); checkpoints (a model and its tokenizer on disk, and the one
loader); text generation (the one decoding engine); evaluation; training (whose samples
decode through the engine); pictures; the HTTP server (the engine behind a queue, served
through the API); the Python API; and the CLI on top, which calls only the API (and reads the
config dataclasses to build its flags). A prompt thus goes from the CLI to the logits without
climbing back.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "src" / "gptscratch"
FLOORS = [
    {"errors"},
    {"files", "hub", "settings"},
    {"data", "model", "runtime"},
    {"checkpoints"},
    {"generation"},
    {"evaluation"},
    {"training"},
    {"viz"},
    {"server"},
    {"api"},
    {"cli"},
]
FLOOR = {part: level for level, parts in enumerate(FLOORS) for part in parts}
# What the CLI may import besides the API: the config dataclasses its flags are built from.
CLI_CONFIG_MODULES = {"model.config", "training.config", "training.presets", "generation.config",
                      "server.config", "settings"}


def _part(path: Path, package: Path) -> str:
    rel = path.relative_to(package)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> set[str]:
    """The gptscratch modules `path` imports, as dotted names below `gptscratch`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "gptscratch" and len(parts) > 1:
                found.add(".".join(parts[1:]))
    return found


def violations(package: Path) -> list[str]:
    """Every import in `package` that points sideways or up."""
    bad = []
    for path in sorted(package.rglob("*.py")):
        part = _part(path, package)
        if part not in FLOOR:
            continue
        for module in sorted(_imports(path)):
            target = module.split(".")[0]
            if target == part:
                continue
            if part == "cli":
                ok = target in ("api", "errors") or module in CLI_CONFIG_MODULES
            else:
                ok = FLOOR.get(target, len(FLOORS)) < FLOOR[part]
            if not ok:
                bad.append(f"{path.relative_to(package)} imports gptscratch.{module}")
    return bad


def _module(path: Path, package: Path) -> str:
    """`checkpoints/load.py` -> "checkpoints.load"; a package's `__init__.py` -> its name."""
    parts = path.relative_to(package).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def circles(package: Path) -> list[list[str]]:
    """Every group of modules that import each other in a circle (directly or through
    others), inside functions too, as the strongly connected components of the import graph
    (Tarjan's algorithm)."""
    paths = {_module(p, package): p for p in sorted(package.rglob("*.py"))}
    graph = {m: sorted(i for i in _imports(p) if i in paths and i != m) for m, p in paths.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        for n in graph[m]:
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            group = []
            while True:
                n = stack.pop()
                group.append(n)
                if n == m:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for m in graph:
        if m not in index:
            visit(m)
    return sorted(found)


def test_no_modules_import_each_other_in_a_circle() -> None:
    assert circles(PACKAGE) == []


def test_a_circle_is_caught(tmp_path: Path) -> None:
    files = {
        "checkpoints/a.py": "from gptscratch.checkpoints.b import x\n",
        "checkpoints/b.py": "def f():\n    from gptscratch.checkpoints.c import y  # hidden\n",
        "checkpoints/c.py": "import gptscratch.checkpoints.a\n",
        "checkpoints/d.py": "from gptscratch.checkpoints.a import z\n",  # uses the circle
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert circles(tmp_path) == [["checkpoints.a", "checkpoints.b", "checkpoints.c"]]


def test_every_part_of_the_package_has_a_floor() -> None:
    parts = {_part(p, PACKAGE) for p in PACKAGE.rglob("*.py")} - {"__init__", "__main__"}
    assert parts <= set(FLOOR), parts - set(FLOOR)


def test_imports_point_downward() -> None:
    assert violations(PACKAGE) == []


def test_nothing_imports_the_cli() -> None:
    users = [p for p in PACKAGE.rglob("*.py")
             if _part(p, PACKAGE) not in ("cli", "__main__")
             and any(m.split(".")[0] == "cli" for m in _imports(p))]
    assert not users


def test_wrong_imports_are_caught(tmp_path: Path) -> None:
    """The checker itself, on a made-up package: sideways, upward and CLI shortcuts."""
    files = {
        "model/a.py": "from gptscratch.data.prepare import prepare\n",  # sideways
        "data/b.py": "import gptscratch.training.loop\n",  # upward
        "cli/c.py": "from gptscratch.generation.stream import stream_chunks\n",  # not the API
        "cli/d.py": "from gptscratch.generation.config import GenerationConfig\n",  # allowed
        "training/e.py": "from gptscratch.evaluation.evaluate import estimate_loss\n",  # ok
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert violations(tmp_path) == [
        "cli/c.py imports gptscratch.generation.stream",
        "data/b.py imports gptscratch.training.loop",
        "model/a.py imports gptscratch.data.prepare",
    ]


def test_the_public_api_is_listed_once_and_every_name_resolves() -> None:
    """`gptscratch.api` names each public function once (`_HOME`, with its home module);
    `gptscratch` offers the same names."""
    import gptscratch
    import gptscratch.api as api

    assert api.__all__ == list(api._HOME) and gptscratch.__all__ is api.__all__
    for name in api.__all__:
        assert getattr(api, name) is getattr(gptscratch, name) is not None, name
    assert api.train.__module__ == "gptscratch.training.run"
