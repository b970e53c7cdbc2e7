"""The layout explains itself: subpackages by responsibility, imports one way.

Read from the source (ast), so a test fails the moment a module reaches the wrong way:
`core` is pure (no aiohttp, no I/O libraries, nothing of the gate but `core` and the
config's types), the books never import the HTTP layer, and so on down the map in the
README's "Architecture" section. Imports under `if TYPE_CHECKING:` are for annotations
only and do not count.
"""

from __future__ import annotations

import ast
import asyncio
import sys
from pathlib import Path

import pytest

from .support import raw_config, write_config

GATE = Path(__file__).resolve().parent.parent / "gate"
# subpackage -> the gate subpackages it may import at run time
ALLOWED = {
    "core": {"core", "config"},
    "config": {"config"},
    "books": {"core", "config", "books"},
    "upstream": {"core", "config", "books", "upstream"},
    "sinks": {"core", "config", "books", "sinks"},
    "ops": {"core", "config", "books", "upstream", "ops", "context"},
    "http": {"core", "config", "books", "upstream", "ops", "http", "context"},
    "cli": {"core", "config", "books", "sinks", "cli"},
}
PURE_FORBIDDEN = {"aiohttp", "aiofiles", "redis", "asyncpg", "socket", "subprocess"}


def _runtime_imports(tree: ast.Module) -> list[str]:
    """Absolute module names imported outside `if TYPE_CHECKING:` blocks."""
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    found: list[str] = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"relative import in the gate: {ast.unparse(node)}"
            found.append(node.module or "")
    return found


def _modules() -> list[tuple[str, Path]]:
    return [(p.relative_to(GATE).parts[0], p) for p in sorted(GATE.glob("*/*.py"))]


@pytest.mark.parametrize("package, path", _modules(), ids=lambda x: str(x))
def test_imports_run_one_way(package: str, path: Path) -> None:
    imports = _runtime_imports(ast.parse(path.read_text(encoding="utf-8")))
    reached = {name.split(".")[1] for name in imports if name.startswith("gate.")}
    assert reached <= ALLOWED[package], f"{path.name} imports {sorted(reached - ALLOWED[package])}"
    if package == "core":
        libs = {name.split(".")[0] for name in imports}
        assert not libs & PURE_FORBIDDEN, f"core/{path.name} imports {libs & PURE_FORBIDDEN}"


def test_every_subpackage_says_what_it_owns() -> None:
    for package in ALLOWED:
        init = GATE / package / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc) > 40, f"gate/{package}/__init__.py needs a docstring"


def test_no_module_left_at_the_top_but_the_composition_root() -> None:
    top = sorted(p.name for p in GATE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "app.py", "context.py", "logfilter.py"]


# -- the spend store: one protocol, two implementations, neither a subclass ----------------


def _protocol_members() -> set[str]:
    from gate.books.store import SpendStore

    tree = ast.parse((GATE / "books" / "store.py").read_text())
    (proto,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SpendStore"]
    names = {n.name for n in proto.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    names |= {n.target.id for n in proto.body if isinstance(n, ast.AnnAssign)}  # type: ignore[union-attr]
    assert names and SpendStore.__name__ == "SpendStore"
    return names


def test_both_stores_implement_the_protocol_and_neither_extends_the_other() -> None:
    """`Ledger` (JSONL) and `RedisLedger` each define every member of `SpendStore`
    themselves; the Redis store keeps a `Ledger` inside (its mirror) instead of
    inheriting from it, and uses only its public methods."""
    from gate.books.ledger import Ledger
    from gate.books.redis_store import RedisLedger

    assert not issubclass(RedisLedger, Ledger) and not issubclass(Ledger, RedisLedger)
    assert RedisLedger.__mro__[1:] == (object,)
    members = _protocol_members()
    for store in (Ledger, RedisLedger):
        defined = set(vars(store)) | set(getattr(store, "__annotations__", {}))
        defined |= _assigned_in_init(store)
        assert members - defined == set(), (store.__name__, members - defined)
    source = (GATE / "books" / "redis_store.py").read_text()
    reached = {
        node.attr
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "books"
    }
    assert reached == set(), f"redis_store reaches into the Ledger's privates: {reached}"


def _assigned_in_init(cls: type) -> set[str]:
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls.__init__)))  # type: ignore[misc]
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
        and isinstance(node.ctx, ast.Store)
    }


def test_the_composition_root_does_not_branch_on_the_store_type() -> None:
    """`app.py` opens whatever store the config names through `books.opening` and
    works with the protocol: no store class is named there, no isinstance on one."""
    source = (GATE / "app.py").read_text()
    assert "RedisLedger" not in source and "Ledger(" not in source
    assert "isinstance(ledger" not in source


STARTED_MODULES = """
import asyncio, sys
from pathlib import Path
from aiohttp.test_utils import TestClient, TestServer
from gate.app import create_app
from gate.config import load_config

AGENT = {"X-Agent-ID": "agent-1", "Authorization": "Bearer sk-or-v1-test"}

async def main() -> None:
    app = create_app(load_config(Path(sys.argv[1]), {}))
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/api/health")).status == 200
        chat = {"messages": [{"role": "user", "content": "hi"}]}
        answer = await client.post("/v1/chat/completions", json=chat, headers=AGENT)
        assert answer.status == 200, await answer.text()
    print(" ".join(sorted({m.split(".")[0] for m in sys.modules})))

asyncio.run(main())
"""


async def test_a_gate_on_the_jsonl_store_never_loads_redis_or_asyncpg(mock, tmp_path: Path) -> None:
    """The Redis client is ~11 MB of a running gate's memory and asyncpg ~3 MB: a gate
    on the JSONL store without a Postgres sink, started and answering, loads neither
    (they come with `spend_store: {backend: redis}` and a sink that asks for them)."""
    config = write_config(tmp_path / "gate.yaml", raw_config(tmp_path, mock.base_url))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        STARTED_MODULES,
        str(config),
        cwd=GATE.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # the mock answers on this loop meanwhile
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    loaded = set(out.decode().split())
    assert {"aiohttp", "gate", "orjson"} <= loaded  # it did start and answer
    assert not loaded & {"redis", "asyncpg", "hiredis"}
