"""mkdocs hooks: the reference parts of the docs site, generated from the code at build time.

A page asks for a part with a marker line ``<!-- generated: NAME -->``; ``on_page_markdown`` replaces it
with ``PARTS[NAME]()``. So adding a setting, an error code, a route or a module changes the site without
editing a page. An unknown marker fails the build. ``api/openapi.json`` (the app's own ``openapi()``) is
added to the site as a file, never committed.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "emotionq"
MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)


def _cell(text: object) -> str:
    """Text fit for one cell of a markdown table."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _summary(path: Path) -> str:
    """The first sentence of a module's docstring, on one line."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    return paragraph.split(". ")[0].rstrip(".").replace("``", "`")


# -- configuration -------------------------------------------------------------------------------------------

def _setting_groups() -> dict[str, str]:
    """Each Settings field's group: the comment line (``    # The model.``) above it in settings.py."""
    source = (PACKAGE / "settings.py").read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    aliases = {n.targets[0].id: ast.unparse(n.value.slice.elts[0]) for n in tree.body  # X = Annotated[T, ...]
               if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name) and
               isinstance(n.value, ast.Subscript) and ast.unparse(n.value.value) == "Annotated"}
    groups, group = {}, "General"
    for node in cls.body:
        for line in lines[:node.lineno - 1][::-1]:
            if re.match(r"^    # \S", line):
                group = line.strip()[2:].rstrip(".")
                break
            if line.strip() and not line.lstrip().startswith("#") and line.startswith("    ") and \
                    not line.startswith("     "):
                break
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            annotation = re.sub(r"\b\w+\b", lambda m: aliases.get(m.group(0), m.group(0)), ast.unparse(node.annotation))
            groups[node.target.id] = (group, annotation)
    return groups


def _default(field) -> str:
    from pydantic_core import PydanticUndefined

    value = field.default
    if value is PydanticUndefined and field.default_factory is not None:
        value = field.default_factory()
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(f"`{v}`" for v in value) if value else "empty"
    if value is None:
        return "unset"
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int) and value >= 1024 and value % 1024 == 0:
        for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if value % size == 0:
                return f"`{value}` ({value // size} {unit})"
    return f"`{value}`"


def _bounds(field) -> str:
    words = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}
    found = []
    for item in field.metadata:
        for attr, sign in words.items():
            if getattr(item, attr, None) is not None:
                found.append(f"{sign} {getattr(item, attr)}")
    return ", ".join(found)


def settings_table() -> str:
    from emotionq.settings import Settings

    groups = _setting_groups()
    by_group: dict[str, list[str]] = {}
    for name, field in Settings.model_fields.items():
        group, annotation = groups[name]
        kind = annotation.replace("Literal[", "one of [").replace("'", "").replace(" | ", " or ")
        bounds = ", ".join(filter(None, [_bounds(field), "comma-separated" if kind.startswith("list[") else ""]))
        row = (f"| `EMOTIONQ_{name.upper()}` | `{_cell(kind)}`{' (' + bounds + ')' if bounds else ''} | "
               f"{_cell(_default(field))} | {_cell(field.description or '')} |")
        by_group.setdefault(group, []).append(row)
    out = []
    for group, rows in by_group.items():
        out += [f"### {group}", "", "| variable | type | default | what it does |", "| --- | --- | --- | --- |",
                *rows, ""]
    return "\n".join(out)


# -- error codes ---------------------------------------------------------------------------------------------

def _error_classes() -> dict[str, type]:
    from emotionq import errors

    return {name: cls for name, cls in vars(errors).items()
            if isinstance(cls, type) and issubclass(cls, errors.EmotionQError)}


def _literal(node: ast.AST | None, defaults: dict[str, str] | None = None) -> str | None:
    """A string constant, or an f-string with its placeholders written ``<name>`` (or, where a placeholder
    is a parameter of the enclosing function with a string default, that default)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else
                       (defaults or {}).get(ast.unparse(v.value), "<" + ast.unparse(v.value) + ">")
                       for v in node.values)
    return None


class _CodeFinder(ast.NodeVisitor):
    """The codes one module gives: ``SomeError(message, code=...)`` calls (the class may be a parameter
    whose default is an error class) and ``{"code": ..., "message": ...}`` records of failed jobs."""

    def __init__(self, classes: dict[str, type]) -> None:
        self.classes, self.found, self.defaults = classes, [], [{}]

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        args = node.args.args[len(node.args.args) - len(node.args.defaults):] + node.args.kwonlyargs
        values = node.args.defaults + [d for d in node.args.kw_defaults]
        self.defaults.append({**self.defaults[-1], **{a.arg: ast.unparse(v).strip("'\"") for a, v in
                                                     zip(args, values) if v is not None}})
        self.generic_visit(node)
        self.defaults.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Call(self, node: ast.Call) -> None:
        name = ast.unparse(node.func).split(".")[-1]
        name = self.defaults[-1].get(name, name)
        code = next((_literal(k.value, self.defaults[-1]) for k in node.keywords if k.arg == "code"), None)
        retry = next((k.value.value for k in node.keywords if k.arg == "retryable" and isinstance(k.value, ast.Constant)),
                     None)
        if code and name in self.classes and "<" not in code:
            cls = self.classes[name]
            self.found.append((code, cls, _literal(node.args[0]) if node.args else None,
                               cls.retryable if retry is None else retry))
        self.generic_visit(node)

    def visit_Dict(self, node: ast.Dict) -> None:
        pairs = {_literal(k): v for k, v in zip(node.keys, node.values) if k is not None}
        code = _literal(pairs.get("code")) if "code" in pairs and "message" in pairs else None
        if code and "<" not in code:
            retry = pairs.get("retryable")
            self.found.append((code, None, _literal(pairs["message"]),
                               isinstance(retry, ast.Constant) and retry.value is True))
        self.generic_visit(node)


def raised_codes() -> dict[str, dict]:
    """Every error code emotionq gives, with the class that carries it and the modules that give it:
    class defaults, ``code=`` arguments of error classes, and ``{"code": ...}`` records of failed jobs."""
    classes = _error_classes()
    codes: dict[str, dict] = {}
    for cls in classes.values():
        if "code" in vars(cls) and cls is not classes["APIError"]:
            codes[cls.code] = {"cls": cls, "where": {"emotionq.errors"}, "message": "", "retry": {cls.retryable}}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        finder = _CodeFinder(classes)
        finder.visit(ast.parse(path.read_text()))
        for code, cls, message, retry in finder.found:
            entry = codes.setdefault(code, {"cls": cls, "where": set(), "message": "", "retry": set()})
            entry["retry"].add(bool(retry))
            entry["cls"] = entry["cls"] or cls
            entry["where"].add(module)
            entry["message"] = entry["message"] or (message or "")
    return codes


def errors_table() -> str:
    from emotionq.web.problems import STATUS

    def status(cls) -> str:
        if cls is None or cls.__name__ == "APIError":
            return "(in a failed job's `error`)" if cls is None else "(no answer)"
        return str(next(s for c, s in STATUS if issubclass(cls, c)))

    server, client = [], []
    for code, entry in sorted(raised_codes().items()):
        cls, where = entry["cls"], sorted(entry["where"])
        retry = {frozenset({True}): "yes", frozenset({False}): "no"}.get(frozenset(entry["retry"]), "sometimes")
        meaning = (cls.__doc__ or "").strip().splitlines()[0] if cls else ""
        example = _cell(entry["message"])[:160]
        row = (f"| `{code}` | {status(cls)} | {retry} | {f'`{cls.__name__}`' if cls else ''} | {_cell(meaning)}"
               f"{' e.g. *' + example + '*' if example else ''} | {', '.join(f'`{m}`' for m in where)} |")
        (client if all(m.startswith("emotionq.client") for m in where) else server).append(row)
    head = ["| code | HTTP status | retryable | class | meaning | given in |", "| --- | --- | --- | --- | --- | --- |"]
    return "\n".join(["### Codes the service gives", "", *head, *server, "",
                      "### Codes only the client gives", "",
                      "`emotionq.client` raises `APIError` with these where the API gave no problem to raise "
                      "(and `http_<status>` for an answer that is not a problem).", "", *head, *client, ""])


def error_tree() -> str:
    from emotionq import errors

    return "```\n" + errors.__doc__.split("\n\n")[1].strip("\n") + "\n```\n"


# -- OpenAPI -------------------------------------------------------------------------------------------------

def openapi_schema() -> dict:
    from emotionq.api import create_app

    return create_app().openapi()


def _type(schema: dict) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(_type(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " or ".join(f"`{v}`" for v in schema["enum"])
    if schema.get("type") == "array":
        return f"array of {_type(schema.get('items', {}))}"
    return schema.get("type", schema.get("format", "any"))


def _properties(schema: dict) -> list[str]:
    required = set(schema.get("required", []))
    rows = ["| field | type | required | description |", "| --- | --- | --- | --- |"]
    for name, prop in schema.get("properties", {}).items():
        rows.append(f"| `{name}` | {_cell(_type(prop))} | {'yes' if name in required else ''} | "
                    f"{_cell(prop.get('description', prop.get('title', '')))} |")
    return rows + [""]


def _operation(method: str, path: str, op: dict, schemas: dict) -> list[str]:
    out = [f"### `{method.upper()} {path}`", "", f"**{op.get('summary', '')}.** {op.get('description', '')}", ""]
    if op.get("parameters"):
        out += ["| parameter | in | type | required | description |", "| --- | --- | --- | --- | --- |"]
        for p in op["parameters"]:
            out.append(f"| `{p['name']}` | {p['in']} | {_cell(_type(p.get('schema', {})))} | "
                       f"{'yes' if p.get('required') else ''} | {_cell(p.get('description', ''))} |")
        out.append("")
    for media, content in op.get("requestBody", {}).get("content", {}).items():
        schema = content.get("schema", {})
        schema = schemas.get(_type(schema), schema) if "$ref" in schema else schema
        out += [f"Request body, `{media}`:", "", *_properties(schema)]
    out += ["| status | meaning | body |", "| --- | --- | --- |"]
    for status, answer in op.get("responses", {}).items():
        content = answer.get("content", {})
        body = ", ".join(f"`{media}`" + (f" ({_type(c['schema'])})" if "schema" in c else "")
                         for media, c in content.items())
        codes = sorted({e["value"]["code"] for c in content.values() for e in c.get("examples", {}).values()
                        if isinstance(e.get("value"), dict) and "code" in e["value"]})
        codes_text = " Codes: " + ", ".join(f"`{c}`" for c in codes) + "." if codes else ""
        out.append(f"| {status} | {_cell(answer.get('description', ''))}{codes_text} | {_cell(body)} |")
    return out + [""]


def openapi_reference() -> str:
    schema = openapi_schema()
    schemas = schema.get("components", {}).get("schemas", {})
    out = [f"Generated from `{schema['info']['title']}` {schema['info']['version']}'s own `openapi()` when the "
           "site was built; the same document, as JSON: [openapi.json](openapi.json).", "", "## Operations", ""]
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            out += _operation(method, path, op, schemas)
    out += ["## Schemas", ""]
    for name, s in schemas.items():
        if name in ("HTTPValidationError", "ValidationError"):
            continue
        out += [f"### {name}", "", _cell(s.get("description", "")), "", *_properties(s)]
    return "\n".join(out)


# -- layout --------------------------------------------------------------------------------------------------

def layout() -> str:
    """Every module of emotionq by package, with the first sentence of its docstring."""
    packages: dict[str, list[tuple[str, str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT)
        package = "/".join(rel.parts[:2]) + "/" if len(rel.parts) > 2 else "emotionq/ (top level)"
        packages.setdefault(package, []).append((str(rel), _summary(path)))
    packages["emotionq/web/"].append(("emotionq/web/page/", "the upload page: static HTML, CSS and JavaScript, "
                                                            "no build step"))
    out = []
    for package, rows in packages.items():
        init = PACKAGE.parent / package / "__init__.py" if package.endswith("/") and "top" not in package else None
        out += [f"### `{package}`", "", _cell(_summary(init)) + "." if init and init.exists() else "", "",
                "| module | what it is for |", "| --- | --- |"]
        out += [f"| `{name}` | {_cell(text)} |" for name, text in rows] + [""]
    out += ["### Outside the package", "", "| path | what it is for |", "| --- | --- |",
            f"| `celeryconfig.py` | {_cell(_summary(ROOT / 'celeryconfig.py'))} |",
            "| `benchmarks/` | `make bench`: one module per benchmark, the table and JSON in common.py |",
            "| `scripts/` | `make` helpers: system packages, the machine's servers, GPU checks, these docs' hooks |",
            "| `deploy/` | the Dockerfile's companions: compose, Kubernetes (kustomize, KEDA), Prometheus, Grafana |",
            "| `tests/` | mirrors the package; servers and audio made for real (`harness.py`, `servers.py`, "
            "`audio_factory.py`) |", ""]
    return "\n".join(out)


PARTS = {"settings": settings_table, "error-codes": errors_table, "error-tree": error_tree,
         "openapi": openapi_reference, "layout": layout}


def on_page_markdown(markdown: str, page, config, files) -> str:
    def part(match: re.Match) -> str:
        name = match.group(1)
        if name not in PARTS:
            raise ValueError(f"{page.file.src_uri}: no generated part {name!r}; known: {sorted(PARTS)}")
        return PARTS[name]()

    return MARKER.sub(part, markdown)


def on_files(files, config):
    from mkdocs.structure.files import File

    files.append(File.generated(config, "api/openapi.json", content=json.dumps(openapi_schema(), indent=2)))
    return files
