"""MkDocs hooks: the pages that are generated from the project's own sources at build time.

* ``science.md``: DESIGN.md's "The science in one page" and README.md's "What it finds";
* ``conventions.md``: README.md's loss convention and label definitions, DESIGN.md's conventions;
* ``commands.md``: every ``phaseprobe`` command's ``--help``, from the CLI itself;
* ``api.md``: one mkdocstrings entry per name in ``phaseprobe.__all__``;
* ``tutorial.md``: ``docs/tutorial.ipynb`` with its stored outputs (images written next to it);
* ``gallery.md``: every figure README.md describes under ``docs/``, with the command behind it.

Nothing here is hand-copied, so the site cannot drift from the README, the CLI or the docstrings.
"""

from __future__ import annotations

import base64
import re
import tomllib
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
PROGRESS_TICK = re.compile(r"^\[[^\]]+\] \d+(/\d+)? ")
GENERATED = ("science.md", "conventions.md", "commands.md", "api.md", "tutorial.md", "gallery.md")


def markdown_section(text: str, heading: str) -> str:
    """The body of the section whose heading line starts with ``heading`` (up to the next
    heading of the same or a higher level)."""
    lines = text.splitlines()
    level = len(heading) - len(heading.lstrip("#"))
    out, inside = [], False
    for line in lines:
        m = re.match(r"^(#+)\s", line)
        if inside and m and len(m.group(1)) <= level:
            break
        if inside:
            out.append(line)
        elif line.startswith(heading):
            inside = True
    if not inside:
        raise ValueError(f"no section '{heading}' found")
    return "\n".join(out).strip() + "\n"


def demote(text: str, by: int = 1) -> str:
    """Every heading one level lower (a section placed under a page title)."""
    return re.sub(r"^(#+)\s", lambda m: "#" * (len(m.group(1)) + by) + " ", text, flags=re.M)


def science_page() -> str:
    design = (ROOT / "DESIGN.md").read_text()
    readme = (ROOT / "README.md").read_text()
    return ("# The science\n\n*From DESIGN.md and README.md.*\n\n## The science in one page\n\n"
            + markdown_section(design, "## The science in one page")
            + "\n## What it finds\n\n" + demote(markdown_section(readme, "## What it finds"))
            + "\nEvery figure named above is shown in the [gallery](gallery.md).\n")


def conventions_page() -> str:
    design = (ROOT / "DESIGN.md").read_text()
    readme = (ROOT / "README.md").read_text()
    return ("# Conventions\n\n*From README.md and DESIGN.md.*\n\n## The loss convention (one, project-wide)\n\n"
            + markdown_section(readme, "## The loss convention")
            + "\n## What the labels mean\n\n" + markdown_section(readme, "## What the labels mean")
            + "\n## Input, reproducibility, progress, figures\n\n" + markdown_section(design, "## Conventions"))


def _help(args: list[str]) -> str:
    """A command's ``--help`` as the CLI prints it (100 columns, no colour)."""
    from typer.testing import CliRunner

    from phaseprobe.cli import app

    env = {"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    res = CliRunner().invoke(app, [*args, "--help"], env=env, prog_name="phaseprobe")
    if res.exit_code != 0 or not res.output.strip():
        raise RuntimeError(f"phaseprobe {' '.join(args)} --help failed: {res.output[-500:]}")
    return "\n".join(line.rstrip() for line in res.output.strip("\n").splitlines())


def commands_page() -> str:
    from phaseprobe.cli import COMMANDS

    parts = ["# Commands\n\n*Generated from the CLI's own `--help`.* Every command that trains resumes after a kill, "
             "refuses a second writer of its folder and shows progress; bad input is one line `error: ...` and "
             "exit status 2.\n", "## phaseprobe\n\n```text\n" + _help([]) + "\n```\n"]
    for name in COMMANDS:
        parts.append(f"## phaseprobe {name}\n\n```text\n{_help([name])}\n```\n")
    return "\n".join(parts)


def api_page() -> str:
    import phaseprobe

    groups = [
        ("Running experiments", ["spec_for", "alpha_sweep", "connect_minima", "basin_hierarchy", "sweep_curvature",
                                 "SweepSpec", "ProgressReporter", "PhaseprobeError"]),
        ("Reading results", ["open_run", "Run", "find_transitions", "summarize"]),
        ("Geometry of any model and loss", ["make_error_fn", "make_loss_fn", "hvp", "exact_hessian", "lanczos",
                                            "slq_density", "hutchinson", "scalar_curvature", "saddle_index"]),
        ("PyTorch models", ["from_torch", "to_torch"]),
    ]
    listed = [n for _, names in groups for n in names]
    rest = [n for n in phaseprobe.__all__ if n not in listed]
    if rest:
        groups.append(("Other", rest))
    parts = ["# Python API\n\nEverything below is importable from `phaseprobe` (`phaseprobe.__all__`); "
             "the entries are generated from the docstrings.\n\n```python\nimport phaseprobe\n"
             "run = phaseprobe.alpha_sweep(\"runs/mine\", model_file=\"my_net.py:make_model\", data=\"arrays.npz\")\n"
             "print(run.tables[\"transitions\"])\n```\n"]
    for title, names in groups:
        parts.append(f"## {title}\n")
        for n in names:
            where = phaseprobe._EXPORTS.get(n)
            path = f"{where}.{n}" if where else f"phaseprobe.{n}"
            parts.append(f"::: {path}\n    options:\n      heading_level: 3\n      show_root_full_path: false\n")
    return "\n".join(parts)


def _output_text(out: dict) -> str:
    if out.get("output_type") == "stream":
        text = "".join(out.get("text", ""))
        if out.get("name") == "stderr":  # progress: the final line of each phase, not every tick
            text = "".join(line for line in text.splitlines(keepends=True)
                           if not PROGRESS_TICK.match(line) or line.rstrip().endswith("done"))
        return text
    data = out.get("data", {})
    if "text/plain" in data and "image/png" not in data and "text/html" not in data:
        return "".join(data["text/plain"])
    return ""


def tutorial_page(config, files) -> str:
    """``docs/tutorial.ipynb`` as Markdown: text cells as they are, code cells fenced, text
    outputs fenced, PNG outputs written as generated image files."""
    import nbformat

    nb = nbformat.read(ROOT / "docs" / "tutorial.ipynb", as_version=4)
    parts = ["*This page is `docs/tutorial.ipynb` with the outputs stored in it; the test suite executes the "
             "notebook (`tests/test_tutorial.py`).*\n"]
    n_img = 0
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            parts.append(cell.source + "\n")
            continue
        if cell.cell_type != "code":
            continue
        parts.append("```python\n" + cell.source + "\n```\n")
        text = "".join(_output_text(o) for o in cell.get("outputs", []))
        if text.strip():
            parts.append("```text\n" + text.rstrip() + "\n```\n")
        for out in cell.get("outputs", []):
            png = out.get("data", {}).get("image/png") if out.get("output_type") in ("display_data", "execute_result") else None
            if png:
                n_img += 1
                name = f"tutorial_files/output_{n_img}.png"
                files.append(File.generated(config, name, content=base64.b64decode(png)))
                parts.append(f"![output {n_img}]({name})\n")
            html = out.get("data", {}).get("text/html")
            if html and not png:
                parts.append("".join(html) + "\n")
    return "\n".join(parts)


def _spec_kind(spec: str) -> str | None:
    """The command a spec file is for: its first table (``[sweep]``, ``[grok]``, ...)."""
    p = ROOT / spec
    try:
        data = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    tables = [k for k, v in data.items() if isinstance(v, dict)]
    return tables[0] if tables else None


def gallery_entries(readme: str) -> list[dict]:
    """Every README bullet that names figures under ``docs/``: its figures, text, command and section."""
    entries, section, bullet = [], "", None
    for line in readme.splitlines() + [""]:
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        if line.startswith("* "):
            if bullet:
                entries.append(bullet)
            bullet = {"text": line[2:], "section": section}
        elif bullet and line.startswith("  ") and line.strip():
            bullet["text"] += " " + line.strip()
        else:
            if bullet:
                entries.append(bullet)
            bullet = None
    out = []
    for e in entries:
        if not e["text"].startswith("`docs/"):
            continue
        m = re.match(r"^(.*?[`)]):\s", e["text"])
        head = m.group(1) if m else e["text"]
        figs = re.findall(r"`(?:docs/)?([\w\-]+\.png)`", head)
        if not figs:
            continue
        cmd = re.search(r"`(phaseprobe [^`]+)`", e["text"])
        spec = re.search(r"`(examples/[\w\-]+\.toml)`", e["text"])
        if cmd:
            e["command"] = cmd.group(1)
        elif spec and _spec_kind(spec.group(1)):
            e["command"] = f"phaseprobe {_spec_kind(spec.group(1))} --spec {spec.group(1)}"
        else:
            e["command"] = None
            e["section_command"] = ", ".join(f"`{c}`" for c in re.findall(r"`(phaseprobe [^`]+)`", e["section"])) or None
            made_by = re.search(r"\((tests/[\w\-/]+\.py)\)", e["text"])
            e["made_by"] = made_by.group(1) if made_by else None
        e["figures"] = figs
        out.append(e)
    return out


def gallery_page() -> str:
    readme = (ROOT / "README.md").read_text()
    parts = ["# Figure gallery\n\n*Every figure under `docs/` that README.md describes, with the command "
             "behind it as the README gives it and the README's text.*\n"]
    shown = set()
    for e in gallery_entries(readme):
        figs = [f for f in e["figures"] if (ROOT / "docs" / f).exists()]
        if not figs:
            continue
        shown.update(figs)
        parts.append(f"## {', '.join(figs)}\n")
        if e.get("command"):
            parts.append(f"Command: `{e['command']}`\n")
        elif e.get("made_by"):
            parts.append(f"Made by `{e['made_by']}` (no command; the README names the test).\n")
        elif e.get("section_command"):
            parts.append(f"The README names no command for this figure; its section is about {e['section_command']}.\n")
        for f in figs:
            parts.append(f"![{f}]({f})\n")
        parts.append(e["text"] + "\n")
        parts.append(f"*README section: {e['section']}*\n")
    rest = sorted(p.name for p in (ROOT / "docs").glob("*.png") if p.name not in shown)
    if rest:
        parts.append("## Other figures\n\nFigures under `docs/` that the README does not describe:\n")
        for f in rest:
            parts.append(f"![{f}]({f})\n")
    return "\n".join(parts)


def on_files(files, config):
    """Add the generated pages (they exist only in the build)."""
    pages = {
        "science.md": science_page(),
        "conventions.md": conventions_page(),
        "commands.md": commands_page(),
        "api.md": api_page(),
        "gallery.md": gallery_page(),
    }
    pages["tutorial.md"] = tutorial_page(config, files)
    for name, text in pages.items():
        files.append(File.generated(config, name, content=text))
    return files
