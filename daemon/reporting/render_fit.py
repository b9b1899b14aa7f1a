"""Rich figure tables that fit the console's width (80 columns and up), whatever the grouping.

A figure table is a label column (one row per figure) and one column per group. When the groups do
not fit side by side, they are split into column blocks of near-equal size, each block a table of
its own that repeats the label column, so every figure stays on one line with its label; the
blocks are the same for every section, so "Deliveries (2/3)" and "Sales and ROI (2/3)" show the
same groups. Labels wider than a third of the width wrap inside their column; a group key wraps
in its header, and one longer than about three header lines is shortened in the middle
(``very long segm…customers``) — JSON, CSV and HTML carry the full name.

The width is the console's at render time (``__rich_console__``), so the same renderable prints
in one block on a wide terminal and in several on an 80-column one."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

Rows = Sequence[tuple[str, Sequence[str]]]  # (label, one cell per column)
HEADER_WIDTH = 12  # a group key wider than its figures wraps in its header at this width
HEADER_LINES = 3  # … over about this many lines, then it is shortened in the middle
SEPARATOR = 3  # a column's padding (1 each side) and its rule


@dataclass(frozen=True)
class FigureTable:
    """``sections`` of (title, rows); ``headers``: one per column; ``emphasise_last``: the last
    column is the total (bold)."""

    headers: Sequence[str]
    sections: Sequence[tuple[str, Rows]]
    emphasise_last: bool = False

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.tables(options.max_width)

    def tables(self, width: int) -> Iterator[Table]:
        label_width = min(
            max([1] + [cell_len(label) for _, rows in self.sections for label, _ in rows]),
            max(16, min(32, width // 3)),
        )
        widths = [self._column_width(i) for i in range(len(self.headers))]
        blocks = column_blocks(widths, label_width, width)
        for title, rows in self.sections:
            for n, block in enumerate(blocks, 1):
                part = f" ({n}/{len(blocks)})" if len(blocks) > 1 else ""
                table = Table(title=f"{title}{part}", title_justify="left", show_edge=False, pad_edge=False)
                table.add_column("", width=label_width, overflow="fold")
                for i in block:
                    bold = self.emphasise_last and i == len(self.headers) - 1
                    header = Text(shorten(self.headers[i], widths[i] * HEADER_LINES), style="bold" if bold else "")
                    table.add_column(header, justify="right", width=widths[i], overflow="fold")
                for label, cells in rows:
                    styled = [Text(cells[i], style="bold" if self.emphasise_last and i == len(cells) - 1 else "")
                              for i in block]  # fmt: skip
                    table.add_row(Text(label), *styled)
                yield table

    def _column_width(self, i: int) -> int:
        cells = max([1] + [cell_len(cells[i]) for _, rows in self.sections for _, cells in rows])
        return max(cells, min(cell_len(self.headers[i]), max(cells, HEADER_WIDTH)))


def table_width(widths: Sequence[int], label_width: int) -> int:
    """The printed width of a table without edges (``show_edge=False, pad_edge=False``)."""
    return label_width + sum(widths) + SEPARATOR * len(widths)


def column_blocks(widths: Sequence[int], label_width: int, width: int) -> list[list[int]]:
    """The columns (indices) of each block: as few blocks as fit ``width``, as even as they fit.
    A column too wide even alone with the labels gets a block of its own (rich then wraps it)."""
    greedy: list[list[int]] = []
    for i, w in enumerate(widths):
        if greedy and table_width([widths[j] for j in greedy[-1]] + [w], label_width) <= width:
            greedy[-1].append(i)
        else:
            greedy.append([i])
    count = len(greedy)
    if count <= 1:
        return greedy or [[]]
    size, extra = divmod(len(widths), count)
    even, start = [], 0
    for n in range(count):
        stop = start + size + (1 if n < extra else 0)
        even.append(list(range(start, stop)))
        start = stop
    fits = all(table_width([widths[j] for j in block], label_width) <= width for block in even)
    return even if fits else greedy


def shorten(text: str, limit: int) -> str:
    """``text`` within ``limit`` cells, cut in the middle (the start and the end tell names apart)."""
    if cell_len(text) <= limit or limit < 5:
        return text
    tail = (limit - 1) // 3
    head = limit - 1 - tail
    while cell_len(text[:head]) > head:  # wide characters
        head -= 1
    while cell_len(text[-tail:]) > tail:
        tail -= 1
    return f"{text[:head]}…{text[-tail:]}"
