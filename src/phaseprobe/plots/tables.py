"""Terminal tables that fit the reader's terminal (80 columns by default), for every command.

A table is a list of :class:`Col` (what to show, its header with units, how to format a cell,
how much it matters) and a frame. :func:`fit_table` drops the least important columns until
the table fits the console's width and says which ones it left out; ``--wide`` (a console as
wide as the table needs, see :func:`table_console`) shows them all. Cells never print ``nan``
(``—`` or a word the column chooses), counts print as integers, and a strength with its
bracket is one cell (``0.064 [0.05, 0.08]``, see :func:`fmt_bracket`).

How a kind's ``show(run, console)`` uses it::

    from phaseprobe.plots.tables import Col, fmt_num, print_fitted

    cols = [Col("branch", "branch"),
            Col("alpha_c", "alpha_c [bracket]", fmt=lambda r: fmt_bracket(r["alpha_c"], r["lo"], r["hi"])),
            Col("delay", "delay (steps)", priority=2, missing="not reached")]
    print_fitted(console, frame, cols, title="transitions")

``console.width`` decides the fit (rich reads ``COLUMNS``; ``phaseprobe show --wide`` passes a
console that is wide enough for everything), so a kind does not need a ``wide`` flag of its own.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

DASH = "—"
WIDE = 100_000  # the width of a --wide console: no table is ever cut


def _missing(v) -> bool:
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def fmt_num(v, digits: int = 3, missing: str = DASH) -> str:
    """One number for a reader: ``missing`` for None/NaN, integers (and integral counts) as
    integers, floats to ``digits`` significant digits.

    **Arguments:**

    - `v`: the value (any type; strings pass through).
    - `digits`: significant digits of a float.
    - `missing`: what a missing value reads as (``—``, ``not reached``, ...).

    **Returns:** the cell text.
    """
    if _missing(v):
        return missing
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int) or (hasattr(v, "dtype") and getattr(v.dtype, "kind", "") in "iu"):
        return str(int(v))
    if isinstance(v, float) or hasattr(v, "dtype"):
        f = float(v)
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f"{f:.{digits}g}"
    return str(v)


def fmt_count(v, missing: str = DASH) -> str:
    """A count as an integer (``3``, never ``3.0``); ``missing`` when absent."""
    if _missing(v):
        return missing
    return str(int(round(float(v))))


def fmt_bracket(c, lo=None, hi=None, digits: int = 3, missing: str = DASH) -> str:
    """A located value with its bracket in one cell: ``0.064 [0.05, 0.08]``.

    **Arguments:**

    - `c`: the value (e.g. alpha_c); `lo`, `hi`: the bracket's ends (either may be missing).
    - `digits`: significant digits; `missing`: the text when ``c`` is missing.

    **Returns:** ``"c [lo, hi]"``, or ``"c"`` when the bracket is missing, or ``missing``.
    """
    if _missing(c):
        return missing
    s = fmt_num(c, digits)
    if _missing(lo) and _missing(hi):
        return s
    return f"{s} [{fmt_num(lo, digits, '?')}, {fmt_num(hi, digits, '?')}]"


def fmt_fraction(k, n, missing: str = DASH) -> str:
    """``k/n`` as counts (``3/3``)."""
    if _missing(k) or _missing(n):
        return missing
    return f"{int(k)}/{int(n)}"


@dataclass
class Col:
    """One column of a fitted table.

    **Arguments:**

    - `key`: the frame column it reads (ignored when `fmt` builds the cell from the whole row).
    - `header`: its header, with units (``"alpha_c [bracket]"``, ``"delay (steps)"``).
    - `fmt`: ``row -> str`` (a row is a dict); default: :func:`fmt_num` of ``row[key]``.
    - `priority`: 0 = always shown; larger numbers are dropped first when the table is too wide.
    - `missing`: the text of a missing cell (default ``—``).
    - `justify`: ``"right"`` (numbers) or ``"left"`` (words).
    """

    key: str
    header: str
    fmt: Callable[[dict], str] | None = None
    priority: int = 0
    missing: str = DASH
    justify: str = "right"
    digits: int = 3

    def cell(self, row: dict) -> str:
        if self.fmt is not None:
            return self.fmt(row)
        return fmt_num(row.get(self.key), self.digits, self.missing)


@dataclass
class Fitted:
    """The result of :func:`fit_table`: the rich table and the headers it left out."""

    table: Table
    dropped: list[str] = field(default_factory=list)


def _build(rows: list[dict], cols: Sequence[Col], title: str | None, wrap: bool = False) -> Table:
    t = Table(title=Text(title) if title else None, box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left", show_edge=False)
    for c in cols:
        t.add_column(Text(c.header), justify=c.justify, no_wrap=not wrap, overflow="fold" if wrap else "ignore")
    for r in rows:
        t.add_row(*[Text(c.cell(r)) for c in cols])
    return t


def table_width(table: Table) -> int:
    """The width a rich table takes when nothing limits it (the longest rendered line)."""
    buf = io.StringIO()
    con = Console(file=buf, width=WIDE, color_system=None, legacy_windows=False)
    con.print(table, crop=False)
    return max((len(ln.rstrip()) for ln in buf.getvalue().splitlines()), default=0)


def fit_table(frame: pd.DataFrame | Sequence[dict], cols: Sequence[Col], width: int, title: str | None = None) -> Fitted:
    """Build a table that fits ``width`` columns by leaving out the least important columns.

    Columns of the same priority are dropped from the right. A title longer than the table
    wraps (rich). Columns of priority 0 are never dropped; when they alone are too wide, their
    cells wrap (never cut).

    **Arguments:**

    - `frame`: the rows (a DataFrame or a list of dicts).
    - `cols`: the columns, in display order.
    - `width`: the console width to fit.
    - `title`: the table's title.

    **Returns:** a :class:`Fitted` (the table, the headers left out).
    """
    rows = frame.to_dict(orient="records") if isinstance(frame, pd.DataFrame) else [dict(r) for r in frame]
    keep = list(cols)
    dropped: list[str] = []
    t = _build(rows, keep, title)
    order = sorted([c for c in keep if c.priority > 0], key=lambda c: (-c.priority, -keep.index(c)))
    for c in order:
        if table_width(t) <= width:
            break
        keep.remove(c)
        dropped.append(c.header)
        t = _build(rows, keep, title)
    if table_width(t) > width:  # the essential columns alone are too wide: let their cells wrap
        t = _build(rows, keep, title, wrap=True)
    return Fitted(t, dropped)


def print_fitted(con: Console, frame, cols: Sequence[Col], title: str | None = None, max_rows: int | None = None) -> list[str]:
    """Print a fitted table on ``con`` (fitted to ``con.width``) and a line naming what it left out.

    **Returns:** the headers left out (empty with ``--wide``).
    """
    rows = frame.to_dict(orient="records") if isinstance(frame, pd.DataFrame) else list(frame)
    if max_rows is not None and len(rows) > max_rows:
        extra = len(rows) - max_rows
        rows = rows[:max_rows]
    else:
        extra = 0
    f = fit_table(rows, cols, con.width, title)
    con.print(f.table)
    if extra:
        con.print(f"... {extra} more rows")
    if f.dropped:
        con.print(f"(left out to fit {con.width} columns: {', '.join(f.dropped)}; --wide shows them)")
    return f.dropped


def frame_columns(df: pd.DataFrame, priority_from: int = 3) -> list[Col]:
    """Default columns for any frame: every column, the first ``priority_from`` always shown,
    the rest dropped from the right when the table is too wide. Integer columns print as counts,
    words left-justified."""
    out = []
    for i, name in enumerate(df.columns):
        numeric = pd.api.types.is_numeric_dtype(df[name]) and not pd.api.types.is_bool_dtype(df[name])
        out.append(Col(str(name), str(name), priority=0 if i < priority_from else i,
                       justify="right" if numeric else "left"))
    return out


def table_console(wide: bool = False) -> Console:
    """The console tables print to: the terminal's width (``COLUMNS`` when set; 80 when neither
    says), or as wide as any table needs with ``wide``."""
    if wide:
        return Console(width=WIDE)
    con = Console()
    if not con.is_terminal and "COLUMNS" not in os.environ:
        return Console(width=80)
    return con


def term_width(con: Console | None = None) -> int:
    """The width a fitted table may use (``con.width``, or the terminal's)."""
    return (con or table_console()).width


def nan_free(v: Any, missing: str = DASH) -> str:
    """Any value as text without ``nan`` (alias of :func:`fmt_num` with 4 digits)."""
    return fmt_num(v, 4, missing)
