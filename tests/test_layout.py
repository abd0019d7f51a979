"""The shape of the code (scripts/import_graph.py): data flows one way, the wings of rag
import downwards only, the answering core imports no command or server code, and no two
modules import each other at load time."""
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _import_graph():
    spec = importlib.util.spec_from_file_location("import_graph",
                                                  REPO / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_import_graph_keeps_the_layout():
    graph = _import_graph()
    edges = graph.graph()
    assert graph.check(edges) == []
    assert "rag.serve.app" not in {t for t, _ in edges["rag.serve.openai"]}
    assert not any(t.startswith("finetune") for s, ts in edges.items() if s.startswith("rag")
                   for t, _ in ts)
    assert not any(t.startswith(("rag", "finetune")) for s, ts in edges.items()
                   if s.startswith("ingest") for t, _ in ts)


def test_the_checker_sees_a_broken_rule():
    graph = _import_graph()
    edges = graph.graph()
    edges["rag.answer"] = [*edges["rag.answer"], ("rag.serve.app", False)]
    edges["rag.serve.app"] = [*edges["rag.serve.app"], ("rag.answer", False)]
    problems = graph.check(edges)
    assert any("answering core" in p for p in problems)
    assert any("import each other" in p for p in problems)
