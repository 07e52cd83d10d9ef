"""The module graph of src/pushsvc: no import cycle, and imports point down the layers,
function-level and TYPE_CHECKING imports included.

A cycle means two modules own parts of one concept; an import up the layers means a lower
part knows a higher one (docs/architecture.md has the map).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from support.fresh_python import printed_by

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "pushsvc"
ARCHITECTURE = PACKAGE.parents[1] / "docs" / "architecture.md"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The pushsvc modules `path` imports anywhere in it (not only at the top)."""
    found: set[str] = set()
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path.parent)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from pushsvc.broker import redis` imports the submodule, not a name.
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    graph = {}
    for path in paths:
        name = _module_name(path)
        # A package's __init__ is imported with each of its modules: an edge from a
        # submodule up to its own package is not a cycle of concepts.
        graph[name] = {m for m in _imports(path, modules) if not name.startswith(m + ".")}
        graph[name].discard(name)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


# Lowest first: one folder (or top-level module) per layer, in the order of the data flow. A
# module may import its own folder and the folders below it, never one above, whatever the
# level of the import; no module is placed apart from its folder. So no two folders import
# each other (docs/architecture.md draws the same order).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    (name, (f"pushsvc.{name}",))
    for name in (
        "errors", "extras", "gevent_private", "loop_pause",  # leaves
        "core",  # what every part shares: topics, events, updates, positions, the lateness rule
        "rules",  # what a rules file declares
        "stats", "series", "alerts",  # what a topic keeps
        "broker",  # the event log, updates and history, behind one protocol
        "ingest",  # events in, through the broker
        "aggregate",  # the aggregator, and the driver that feeds it a partition's log
        "deliver",  # the hub and the stream loop
        "security", "config", "ops", "runtime",  # what a process is made of
        "http", "app", "server",  # the API, the app factory, the WSGI server
        "client", "demo",  # the tools
        "cli", "__main__",  # the command
    )
)  # fmt: skip


def _layer(module: str, layers: tuple[tuple[str, tuple[str, ...]], ...] = LAYERS) -> int | None:
    if module == "pushsvc":
        return 0  # the package's own __init__: the version, nothing else
    best: tuple[int, int] | None = None  # (length of the entry, layer)
    for index, (_, entries) in enumerate(layers):
        for entry in entries:
            if (module == entry or module.startswith(entry + ".")) and (
                best is None or len(entry) > best[0]
            ):
                best = (len(entry), index)
    return None if best is None else best[1]


def _upward_imports(
    graph: dict[str, set[str]], layers: tuple[tuple[str, tuple[str, ...]], ...] = LAYERS
) -> list[str]:
    found = []
    for module in sorted(graph):
        low = _layer(module, layers)
        for target in sorted(graph[module]):
            high = _layer(target, layers)
            if low is not None and high is not None and high > low:
                found.append(
                    f"{module} (layer {layers[low][0]!r}) imports {target} "
                    f"(layer {layers[high][0]!r}, higher)"
                )
    return found


def test_the_layer_checker_sees_an_import_up() -> None:
    layers = (("low", ("p.a",)), ("high", ("p.b",)), ("higher", ("p.b.c",)))
    assert _layer("p.b.c.d", layers) == 2 and _layer("p.b.x", layers) == 1
    assert _upward_imports({"p.a": {"p.b.x"}, "p.b.c": {"p.a", "p.b.x"}}, layers) == [
        "p.a (layer 'low') imports p.b.x (layer 'high', higher)"
    ]


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(m for m in _graph() if _layer(m) is None)
    assert not unplaced, f"place these in LAYERS (tests/unit/test_architecture.py): {unplaced}"


def test_imports_point_down_the_layers() -> None:
    upward = _upward_imports(_graph())
    assert not upward, "imports up the layers (see LAYERS):\n" + "\n".join(upward)


def test_the_checker_sees_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_src_pushsvc_has_no_import_cycle() -> None:
    graph = _graph()
    assert "pushsvc.deliver.hub" in graph and "pushsvc.core.updates" in graph["pushsvc.deliver.hub"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_command_line_and_the_embedded_mode_never_import_redis_py() -> None:
    """`pushsvc` commands start without redis-py (0.2 s at every start when they did): the
    settings read the Redis URL module, whose package must not import the broker eagerly."""
    code = (
        "import sys, pushsvc.cli, pushsvc.config, pushsvc.broker.redis.url\n"
        "from pushsvc.broker.memory import MemoryBroker\n"
        "MemoryBroker.serving(history=10)\n"
        "print(sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.')))"
    )
    found = printed_by(code)
    assert found.strip() == "[]"


def test_the_server_imports_psycopg_only_when_an_outbox_is_read() -> None:
    """psycopg is an extra (`pushsvc[postgres]`): settings without `--outbox-dsn`, and a
    server built from them, never import it."""
    code = (
        "import sys, pushsvc.cli\n"
        "from pushsvc.config import Settings\n"
        "from pushsvc.runtime import Runtime\n"
        "Runtime.build(Settings.load({}), web=True, aggregate=True).close()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'psycopg'))\n"
        "Settings.load({'outbox_dsn': 'postgresql://app@db/app'})\n"
        "print('psycopg' in sys.modules)"
    )
    assert printed_by(code).split() == ["[]", "True"]


def test_the_command_lines_client_commands_never_import_pyjwt() -> None:
    """`pushsvc publish` and `subscribe` read the settings without a JWT key: PyJWT and
    cryptography (half of importing the command line) load only when a key is given."""
    code = (
        "import sys, pushsvc.cli\n"
        "from pushsvc.config import Settings\n"
        "Settings.load({})\n"
        "print(sorted(m for m in ('jwt', 'cryptography') if m in sys.modules))\n"
        "Settings.load({'jwt_key': 'a-secret-of-at-least-32-bytes-of-it!'})\n"
        "print('jwt' in sys.modules)"
    )
    found = printed_by(code)
    assert found.split() == ["[]", "True"]


def test_the_data_flow_above_the_broker_reaches_it_through_its_contract() -> None:
    """The aggregator and its drivers, ingest, the stream loop and the API reach a broker
    through its contract (`pushsvc.broker.base`, `pushsvc.broker.shared_log`) only; the
    runtime chooses the implementation (the Redis bridge reads Redis itself)."""
    contract = {"pushsvc.broker.base", "pushsvc.broker.shared_log"}
    flow = ("pushsvc.aggregate", "pushsvc.ingest", "pushsvc.deliver", "pushsvc.http")
    found = [
        f"{module} imports {target}"
        for module, targets in sorted(_graph().items())
        if module.startswith(flow) and module != "pushsvc.ingest.redis_bridge"
        for target in sorted(targets)
        if target.startswith("pushsvc.broker.") and target not in contract
    ]
    assert not found, "\n".join(found)


def _drawn_order(page: str) -> list[str]:
    """The layers as the page draws them under "The tree", lowest first."""
    block = page.split("## The tree", 1)[1].split("```", 2)[1]
    return [name.strip() for level in block.split("←") for name in level.split(",")]


def test_the_architecture_page_draws_the_layers_in_their_order() -> None:
    assert _drawn_order(ARCHITECTURE.read_text(encoding="utf-8")) == [n for n, _ in LAYERS]


_CLAIM = re.compile(r"that do name one, [^:]*, are these and no others:(.*?\))\.\s", re.S)


def _claimed_to_name_an_implementation(page: str, graph: dict[str, set[str]]) -> set[str]:
    """The modules above `broker/` that the page says name a broker implementation."""
    claim = _CLAIM.search(page)
    assert claim, "docs/architecture.md no longer says which modules above broker/ name one"
    named = {f"pushsvc.{n.replace('/', '.')}" for n in re.findall(r"`([a-z_/]+)`", claim[1])}
    return {m for m in named & graph.keys() if (_layer(m) or 0) > _layer("pushsvc.broker")}


def _naming_an_implementation(graph: dict[str, set[str]]) -> set[str]:
    implementations = ("pushsvc.broker.redis", "pushsvc.broker.memory")
    return {
        module
        for module, targets in graph.items()
        if (_layer(module) or 0) > _layer("pushsvc.broker")
        and any(t == i or t.startswith(i + ".") for t in targets for i in implementations)
    }


def test_the_architecture_page_names_each_module_above_the_broker_naming_a_broker() -> None:
    """docs/architecture.md lists the modules above `broker/` that import `broker/redis` or
    `broker/memory`, and no others: a new one is a choice the page must explain."""
    graph = _graph()
    claimed = _claimed_to_name_an_implementation(ARCHITECTURE.read_text(encoding="utf-8"), graph)
    found = _naming_an_implementation(graph)
    assert claimed == found, (
        f"named by the page but importing none: {sorted(claimed - found)}; "
        f"importing one but not named by the page: {sorted(found - claimed)}"
    )


def test_no_public_class_name_is_defined_twice_outside_the_clients_mirrors() -> None:
    """`pushsvc.client` mirrors the wire types (`Event`, `Point`, `AlertChange`) for users
    who install the client alone; everywhere else a class name means one thing."""
    where: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if module.startswith("pushsvc.client"):
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                where.setdefault(node.name, []).append(module)
    twice = {name: modules for name, modules in where.items() if len(modules) > 1}
    assert not twice, twice


def test_the_embedded_server_runs_the_shared_log_core() -> None:
    """`pushsvc serve` with no Redis runs the core every other mode runs and the simulation
    searches: the memory broker's shared log, driven by the partition pool."""
    from pushsvc.aggregate.partition_pool import PartitionPool
    from pushsvc.app import create_app
    from pushsvc.broker.memory import MemoryBroker, Store

    runtime = create_app({"tick": 0}).extensions["pushsvc"]
    try:
        assert type(runtime.broker) is MemoryBroker
        assert type(runtime.broker.store) is Store
        assert isinstance(runtime.partitions, PartitionPool)
    finally:
        runtime.close()


MAX_MODULE_LINES = 876


def test_no_module_of_the_aggregate_package_is_longer_than_a_reader_holds() -> None:
    """A module of `pushsvc.aggregate` stays at 876 lines at most: one concept a module (each
    feature of a rule is a stage of its own, aggregate/stages/). Its functions' branching is
    held by ruff's C901 (pyproject.toml)."""
    long = {
        str(path.relative_to(PACKAGE)): lines
        for path in sorted((PACKAGE / "aggregate").rglob("*.py"))
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, long
