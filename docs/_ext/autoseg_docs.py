"""Sphinx extension: the parts of the site generated from the code, so that they cannot drift.

At ``builder-inited`` it writes, from the registries and the parsers themselves:

- ``tools/<tool>.md``: one page per tool of :data:`autoseg.cli.TOOLS`, its usage and options
  from the tool's argparse parser, plus ``tools/prose/<tool>.md`` where that file exists;
  ``tools/index.md`` lists the tools;
- ``_generated/configuration.md``: every config section with each key's type, default and
  range (:data:`autoseg.config.BOUNDS`), its cross-key rules (:data:`autoseg.config.RELATIONS`),
  every registered search method's settings and every registered loss's options;
- ``_generated/datasets.md``: the registered datasets;
- ``_generated/ground_truth_tables.md``: the state of every shipped ground-truth table;
- ``_generated/search_scores.md``: every shipped scoring of a search method, rescored against its
  table as the table is now;
- ``api/<package>.md``: one autodoc page per top-level package of ``autoseg``, a section per module;
- ``_generated/figures/*.png``: the figures autoseg draws, from a small untrained supernet.

A file is rewritten only when its text changes, so an incremental build stays incremental.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import inspect
import pkgutil
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterator

import autoseg
from autoseg import cli, config
from autoseg.utils.compilation import COMPILE_MODES
from autoseg.analysis.ground_truth import list_tables, load_table, summary
from autoseg.analysis.ground_truth.scorings import shipped_rescored
from autoseg.analysis.search_quality import mean_std_text, metric_label
from autoseg.data import dataset_default_config, list_datasets
from autoseg.losses import LOSSES, list_losses
from autoseg.layers.ops import list_ops
from autoseg.utils.precision import AUTOCAST_DTYPES
from autoseg.search.methods import SEARCH_METHODS

DOCS = Path(__file__).resolve().parents[1]
TOOLS_DIR = DOCS / "tools"
PROSE_DIR = TOOLS_DIR / "prose"
GENERATED_DIR = DOCS / "_generated"
FIGURES_DIR = GENERATED_DIR / "figures"
API_DIR = DOCS / "api"

CHOICES: dict[str, Any] = {
    "dataset": list_datasets,
    "device": lambda: config.DEVICES,
    "amp": lambda: tuple(AUTOCAST_DTYPES),
    "nan_policy": lambda: config.NAN_POLICIES,
    "schedule": lambda: config.SCHEDULES,
    "compile": lambda: ("false", "true", *COMPILE_MODES),
    "method": lambda: tuple(SEARCH_METHODS),
    "mode": lambda: tuple(config.SearchConfig.MODEL_TYPES),
    "primitives": list_ops,
    "name": list_losses,
}
"""Keys whose values are names from a registry or a list of the code, by key name."""


def escape(text: str) -> str:
    """``text`` as literal Markdown: every ASCII punctuation character backslash-escaped."""
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", text)


def code(text: str) -> str:
    """``text`` as inline code for a table cell (``|`` escaped, as tables need even in code)."""
    text = text.replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def rst_block(text: str) -> str:
    """A docstring (reStructuredText, with Sphinx roles) as a MyST ``eval-rst`` block."""
    return f"```{{eval-rst}}\n{inspect.cleandoc(text)}\n```\n"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; cells must be escaped already (``|`` especially)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("\n", " ") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# -- tools ---------------------------------------------------------------------------------

class _Captured(Exception):
    """Raised by the patched ``parse_args`` to hand the parser out of a tool."""

    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__()
        self.parser = parser


@contextlib.contextmanager
def _capturing_parsers() -> Iterator[None]:
    """While active, ``ArgumentParser.parse_args`` raises :class:`_Captured` instead of parsing."""
    original = argparse.ArgumentParser.parse_args

    def capture(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise _Captured(self)

    argparse.ArgumentParser.parse_args = capture  # type: ignore[method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]


def tool_parser(tool: str) -> argparse.ArgumentParser:
    """The argparse parser of ``autoseg <tool>``: the one its ``parse_args`` (or, without one,
    its ``main``) builds, taken before it parses anything."""
    module = importlib.import_module(f"autoseg.tools.{tool}")
    entry = getattr(module, "parse_args", module.main)
    with _capturing_parsers():
        try:
            entry([])
        except _Captured as captured:
            captured.parser.prog = f"autoseg {tool}"
            return captured.parser
    raise RuntimeError(f"autoseg.tools.{tool} built no argparse parser")


def _argument(action: argparse.Action) -> str:
    """What an option takes: its choices or metavar, nothing for a switch."""
    if action.nargs == 0:
        return ""
    if action.choices is not None:
        shown = "{" + ",".join(map(str, action.choices)) + "}"
    else:
        shown = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
    if action.nargs == "?":
        return f"[{shown}]"
    if action.nargs in ("*", "+") or isinstance(action.nargs, int):
        return f"{shown} ..."
    return shown


def options_table(parser: argparse.ArgumentParser) -> str:
    """The parser's arguments as a table: the option (or positional), what it takes, the default
    and its help text."""
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = ", ".join(action.option_strings) or action.dest
        default = "" if action.default in (None, argparse.SUPPRESS, False) else repr(action.default)
        help_text = (action.help or "") % {"default": action.default, "prog": parser.prog} if action.help else ""
        rows.append([code(name), code(_argument(action)) if _argument(action) else "",
                     code(default) if default else "", escape(help_text)])
    return table(["option", "takes", "default", "what it does"], rows)


def tool_page(tool: str) -> str:
    """The page of ``autoseg <tool>``: its one-line summary, the hand-written prose where there is
    some, and the usage and options generated from its parser."""
    parser = tool_parser(tool)
    parts = [f"# `autoseg {tool}`\n", f"{escape(cli.TOOLS[tool])}.\n"]
    if (PROSE_DIR / f"{tool}.md").is_file():
        parts.append(f"```{{include}} prose/{tool}.md\n```\n")
    parts.append("## Options\n")
    parts.append("Generated from the tool's own parser (`autoseg " + tool + " --help`); in a checkout "
                 f"`python tools/{tool}.py` takes the same.\n")
    parts.append("```text\n" + parser.format_usage().strip() + "\n```\n")
    parts.append(options_table(parser))
    if parser.epilog:
        parts.append("```text\n" + parser.epilog.strip() + "\n```\n")
    return "\n".join(parts)


def tools_index() -> str:
    """The page listing every registered tool with its one line and a toctree of their pages."""
    rows = [[f"[`autoseg {name}`]({name}.md)", escape(what)] for name, what in cli.TOOLS.items()]
    return "\n".join([
        "# Tools\n",
        "Every tool is a subcommand of `autoseg` (`autoseg --help` lists them, `autoseg <tool> --help` "
        "gives a tool's options); in a checkout `python tools/<tool>.py` is the same command. The common "
        "conventions of the training tools are in [Configuration](../configuration.md).\n",
        table(["tool", "what it does"], rows),
        "```{toctree}\n:hidden:\n\n" + "\n".join(cli.TOOLS) + "\n```\n"])


# -- configuration -------------------------------------------------------------------------

def type_name(hint: Any) -> str:
    """A type hint as a reader writes it: ``int | None``, ``list[str]``, ``tuple[float, float]``."""
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("None" if arg is type(None) else type_name(arg) for arg in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(arg) for arg in args)}]"
    return str(hint).replace("typing.", "")


def yaml_value(value: Any) -> str:
    """A default as it is written in a config file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(yaml_value, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {yaml_value(v)}" for key, v in value.items()) + "}"
    return str(value)


def field_default(item: dataclasses.Field) -> Any:
    """A dataclass field's default value."""
    if item.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return item.default_factory()  # type: ignore[misc]
    return item.default


def config_keys(cls: type, prefix: str = "") -> Iterator[tuple[str, type, dataclasses.Field]]:
    """``(dotted key, section class, field)`` for every setting under the config class ``cls``;
    a search's ``model`` section is walked for every search space."""
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        key = prefix + item.name
        if cls is config.SearchConfig and item.name == "model":
            for model_type in dict.fromkeys(config.SearchConfig.MODEL_TYPES.values()):
                yield from config_keys(model_type, key + ".")
        elif dataclasses.is_dataclass(hints[item.name]):
            yield from config_keys(hints[item.name], key + ".")
        else:
            yield key, cls, item


def section_table(cls: type, prefix: str) -> str:
    """One row per setting of the section class ``cls``: key, type, default, range or choices."""
    hints = typing.get_type_hints(cls)
    ranges = config.BOUNDS.get(cls) or getattr(cls, "BOUNDS", {})
    rows = []
    for item in dataclasses.fields(cls):
        allowed = str(ranges[item.name]) if item.name in ranges else ""
        if item.name in CHOICES:
            allowed = "one of " + ", ".join(code(str(name)) for name in CHOICES[item.name]())
        rows.append([code(prefix + item.name), code(type_name(hints[item.name])),
                     code(yaml_value(field_default(item))), allowed if item.name in CHOICES else escape(allowed)])
    return table(["key", "type", "default", "allowed"], rows)


def section_rules(cls: type) -> str:
    """The cross-key rules of a section, one bullet per rule (its docstring)."""
    rules = config.RELATIONS.get(cls, ())
    if not rules:
        return ""
    docs = [" ".join((inspect.getdoc(rule) or rule.__name__).split()) for rule in rules]
    bullets = "\n".join(f"- {doc}" for doc in docs)
    return rst_block("Rules across keys, checked once every key is in its range:\n\n" + bullets)


def section_doc(cls: type, title: str, prefix: str) -> str:
    """A config section: its heading, docstring, table of settings and rules."""
    parts = [f"### {title}\n", rst_block(cls.__doc__ or "")]
    parts += [section_table(cls, prefix), section_rules(cls)]
    return "\n".join(part for part in parts if part)


def experiment_doc(cls: type, title: str) -> str:
    """Every section of one kind of experiment config (search or retrain)."""
    hints = typing.get_type_hints(cls)
    parts = [f"## {title}\n", rst_block(cls.__doc__ or "")]
    top = [item for item in dataclasses.fields(cls) if not dataclasses.is_dataclass(hints[item.name])
           and item.name != "model"]
    if top:
        parts.append("### Top level\n")
        parts.append(table(["key", "type", "default"],
                           [[code(item.name), code(type_name(hints[item.name])), code(yaml_value(field_default(item)))]
                            for item in top]))
        parts.append(section_rules(cls))
    for item in dataclasses.fields(cls):
        if cls is config.SearchConfig and item.name == "model":
            for mode, model_type in config.SearchConfig.MODEL_TYPES.items():
                parts.append(section_doc(model_type, f"`model:` (`mode: {mode}`)", "model."))
        elif dataclasses.is_dataclass(hints[item.name]):
            parts.append(section_doc(hints[item.name], f"`{item.name}:`", item.name + "."))
    return "\n".join(part for part in parts if part)


def methods_doc() -> str:
    """Every registered search method with its paper and its ``method_options`` settings."""
    parts = ["## Search methods: `method_options`\n",
             "The settings of the search method that `train.method` names, in the search config's "
             "`method_options:` section (empty: the method's defaults). Registered methods:\n"]
    for name, method in SEARCH_METHODS.items():
        parts.append(f"### `{name}`\n")
        parts.append(f"{escape(method.reference)}.\n")
        parts.append(rst_block(inspect.getdoc(importlib.import_module(method.__module__)) or ""))
        if dataclasses.fields(method.Settings):
            parts.append(section_table(method.Settings, "method_options."))
        else:
            parts.append("No settings.\n")
    return "\n".join(parts)


def losses_doc() -> str:
    """Every registered loss with its description, whether it takes class weights, and its
    ``loss.options`` settings."""
    parts = ["## Losses: `loss.options`\n",
             "The settings of the loss that `loss.name` names, in the retrain config's `loss.options:` "
             "section (empty: the loss's defaults). Registered losses:\n"]
    for name, loss in LOSSES.items():
        parts.append(f"### `{name}`\n")
        parts.append(rst_block(inspect.getdoc(loss) or ""))
        parts.append("Takes `loss.class_weights`.\n" if loss.takes_class_weights else "Takes no class weights.\n")
        if dataclasses.fields(loss.Options):
            parts.append(rst_block(inspect.getdoc(loss.Options) or ""))
            parts.append(section_table(loss.Options, "loss.options."))
        else:
            parts.append("No options.\n")
    return "\n".join(parts)


def configuration_reference() -> str:
    """The generated configuration reference (included by ``configuration.md``)."""
    return "\n".join([experiment_doc(config.SearchConfig, "Search configs (`autoseg search`)"),
                      experiment_doc(config.RetrainConfig, "Retrain configs (`autoseg retrain`)"),
                      methods_doc(), losses_doc()])


def datasets_table() -> str:
    """The registered datasets: name, task, evaluation split, the configs a run on it starts from
    without ``--config`` and the first line of the class docstring."""
    from autoseg.data import _dataset_class  # the registry's lookup, for the classes themselves

    def default(name: str, kind: str) -> str:
        config_name = dataset_default_config(name, kind)
        return "" if config_name is None else code(f"configs/{kind}/{config_name}.yaml")

    rows = []
    for name in list_datasets():
        cls = _dataset_class(name)
        summary = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
        rows.append([code(name), code(str(getattr(cls, "task", ""))), code(str(getattr(cls, "eval_split", ""))),
                     default(name, "search"), default(name, "retrain"), escape(summary)])
    return table(["`--dataset`", "task", "reported on", "search config", "retrain config", "what it is"], rows)


# -- ground-truth tables ---------------------------------------------------------------------

def ground_truth_tables() -> str:
    """The state of every shipped ground-truth table, read from its JSON: its size against its
    target, the parts that built it, the summary of its first-seed rows and every row."""
    sections = []
    for name in list_tables():
        data = load_table(name)
        rows, stats, parts = data["rows"], summary(data), data["parts"]
        target = max(part["architectures"] for part in parts), max(part["repeats"] for part in parts)
        noise = stats["noise"]
        noise_text = ("fewer than two repeated draws: not measured yet" if noise is None else
                      f"{noise['n']} repeated draws, standard deviation of one retraining "
                      f"{noise['retrain_std']:.2f} points")
        lines = [f"#### `{name}`", "",
                 f"{len(rows)} rows: {stats['architectures']} architectures of the target {target[0]}, "
                 f"{len(rows) - stats['architectures']} repeats of the target {target[1]}. First-seed final "
                 f"{rows[0]['metric']}: mean {stats['mean']:.2f} ± {stats['std']:.2f}, median {stats['median']:.2f}, "
                 f"best {stats['best']:.2f}; protocol noise: {noise_text}.", ""]
        part_rows = []
        for index, part in enumerate(parts):
            built = [row for row in rows if row["part"] == index]
            seconds = sum(row["wall_seconds"] for row in built) / len(built) if built else None
            machine = part["machine"]
            part_rows.append([str(index), part["date"][:10], code(str(part["code_version"])),
                              escape(f"{machine['cpu']}, {machine['cores']} cores, {machine.get('jobs', 1)} "
                                     f"job(s) of {machine['torch_threads']} thread(s), GPU {machine['gpu'] or 'none'}"),
                              str(len(built)), "" if seconds is None else f"{seconds:,.0f}"])
        lines += [table(["part", "date", "code", "machine", "rows", "s per row"], part_rows), ""]
        lines.append(table(["draw", "seed", f"final {rows[0]['metric']}", "path strides", "Multi-Adds", "params",
                            "`skip_connect`", "part"],
                           [[str(row["index"]), str(row["seed"]), f"{row['final']:.2f}",
                             " ".join(map(str, row["strides"])), f"{row['madds'] / 1e6:,.1f} M", f"{row['params']:,}",
                             f"{row['skip_connect']}/{row['edges']}", str(row["part"])] for row in rows]))
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


def search_scores() -> str:
    """Per shipped table, one row per scored search method (means ± standard deviations over its
    searches, rescored against the table as it is now), then one row per search, then where each
    scoring was measured."""
    sections = []
    for name in list_tables():
        rescored = shipped_rescored(name)
        if not rescored:
            sections.append(f"### Against `{name}`\n\nNo search method has been scored against this table yet.")
            continue
        first = next(iter(rescored.values()))
        stats = first["table"]
        label = metric_label(load_table(name)["rows"][0]["metric"])
        lines = [f"### Against `{name}`", "",
                 f"Against the table's {stats['architectures']} architectures as it is now (final {label}: median "
                 f"{stats['median']:.2f}, best {stats['best']:.2f}). Mean ± standard deviation over the searches.", ""]
        rows = []
        for method, result in rescored.items():
            means, searches = result["means"], result["searches"]
            options = result["method_options"]
            matched = [str(search["cost_matched_n"]) for search in searches]
            rows.append([code(method) + (f" ({escape(', '.join(f'{k}={v}' for k, v in options.items()))})"
                                         if options else ""),
                         str(len(searches)), mean_std_text(means["final"], 2), mean_std_text(means["percentile"], 1),
                         mean_std_text(means["regret"], 2),
                         f"{mean_std_text(means['cost_matched'], 1)} ({', '.join(matched)})",
                         f"{mean_std_text(means['random_search'], 2)} (k {mean_std_text(means['k'], 1)})",
                         f"{mean_std_text(means['kendall_tau'], 3)} (n {searches[0]['one_shot_n']})",
                         mean_std_text(means["search_seconds"], 0), mean_std_text(means["retrain_seconds"], 0)])
        lines += [table(["method", "searches", f"final {label}", "percentile", "regret",
                         "cost-matched percentile (architectures within 10 %)", "expected best of k random",
                         "Kendall tau (one-shot vs table)", "search s", "retrain s"], rows), ""]
        detail = [[code(method), escape(search["name"]), f"{search['final']:.2f}", f"{search['percentile']:.1f}",
                   " ".join(map(str, search["strides"] or [])), f"{search['skip_connect']}/{search['edges']}",
                   f"{search['madds'] / 1e6:,.1f} M"]
                  for method, result in rescored.items() for search in result["searches"]]
        lines += [table(["method", "search (seed)", f"final {label}", "percentile", "path strides", "`skip_connect`",
                         "Multi-Adds"], detail), ""]
        made = []
        for method, result in rescored.items():
            record = result["provenance"]
            if record is None:
                made.append([code(method), "not recorded", "", ""])
                continue
            machine = record["machine"]
            made.append([code(method), record["date"][:10], code(str(record["code_version"])),
                         escape(f"{machine['cpu']}, {machine['cores']} cores, {machine['torch_threads']} thread(s), "
                                f"GPU {machine['gpu'] or 'none'}")])
        lines.append(table(["method", "results written", "code", "machine"], made))
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


# -- API -------------------------------------------------------------------------------------

def api_modules() -> list[str]:
    """Every module of the package but the tools (their pages are the tool pages), sorted."""
    names = ["autoseg"] + [info.name for info in pkgutil.walk_packages(autoseg.__path__, "autoseg.")]
    return sorted(name for name in names if not name.startswith("autoseg.tools."))


def api_pages() -> dict[str, list[str]]:
    """The modules of each API page: one page per top-level package or module of ``autoseg``, its
    modules in order (a page per module made the site's navigation, rebuilt for every page, the
    larger part of its build time)."""
    pages: dict[str, list[str]] = {}
    for module in api_modules():
        pages.setdefault(".".join(module.split(".")[:2]), []).append(module)
    return pages


def api_page(page: str, modules: list[str]) -> str:
    """The autodoc page of ``page``: the package's own documentation, then each of its modules
    under a heading of its own."""
    def automodule(module: str) -> str:
        return f"```{{eval-rst}}\n.. automodule:: {module}\n   :members:\n```\n"

    return f"# `{page}`\n\n" + "\n".join(
        automodule(module) if module == page else f"## `{module}`\n\n{automodule(module)}" for module in modules)


def api_index() -> str:
    """The toctree of every API page."""
    return "```{toctree}\n:maxdepth: 1\n\n" + "\n".join(api_pages()) + "\n```\n"


# -- figures ---------------------------------------------------------------------------------

def draw_figures(out: Path) -> None:
    """The figures a search draws, from a small supernet whose architecture parameters are set
    from a seeded random generator (nothing is trained): softmax(alpha), the trellis with its
    Viterbi path, the decoded cell, and the evolution figure of a
    five-epoch history of such random steps."""
    import torch

    from autoseg.search.arch_history import history_entry, history_figure
    from autoseg.search.trellis_network import TrellisSearchNetwork
    from autoseg.analysis.visualize import save_png

    torch.manual_seed(0)
    network = TrellisSearchNetwork(num_classes=3, layers=6, levels=4, blocks=3, filter_multiplier=2)
    entries = []
    with torch.no_grad():
        for epoch in range(5):
            for parameter in network.arch_parameters():
                parameter.add_(0.8 * torch.randn_like(parameter))
            entries.append(history_entry(epoch, network.decode(), network))
    arch = network.decode()
    names = {"alpha/cell": "alpha.png", "beta/trellis": "trellis.png", "cell/decoded": "cell.png"}
    for key, image in network.figures(arch).items():
        save_png(image, out / names[key])
    save_png(history_figure(entries), out / "evolution.png")


# -- Sphinx ----------------------------------------------------------------------------------

def write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` unless it holds it already (keeps incremental builds cheap)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def write_pages(folder: Path, pattern: str, pages: dict[str, str]) -> None:
    """Write ``pages`` (file name -> text) into ``folder`` and delete the files matching ``pattern``
    that are not among them (the page of a tool or module that is gone)."""
    for stale in set(path.name for path in folder.glob(pattern)) - set(pages):
        (folder / stale).unlink()
    for name, text in pages.items():
        write_if_changed(folder / name, text)


def generate(app: Any = None) -> None:
    """Write every generated page and figure into the source tree."""
    write_pages(TOOLS_DIR, "*.md", {**{f"{tool}.md": tool_page(tool) for tool in cli.TOOLS}, "index.md": tools_index()})
    write_if_changed(GENERATED_DIR / "configuration.md", configuration_reference())
    write_if_changed(GENERATED_DIR / "datasets.md", datasets_table())
    write_if_changed(GENERATED_DIR / "ground_truth_tables.md", ground_truth_tables())
    write_if_changed(GENERATED_DIR / "search_scores.md", search_scores())
    write_pages(API_DIR, "autoseg*.md",
                {f"{page}.md": api_page(page, modules) for page, modules in api_pages().items()})
    write_if_changed(GENERATED_DIR / "api_index.md", api_index())
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    draw_figures(FIGURES_DIR)


def setup(app: Any) -> dict[str, Any]:
    """Register the generator with Sphinx."""
    app.connect("builder-inited", generate)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
