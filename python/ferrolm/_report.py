"""Reports that print as Markdown for people and serialise as JSON for machines."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Union

Cell = Union[str, int, float, bool, None]


@dataclass
class Section:
    """One titled table of a report, with free-text notes under it."""

    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: Cell) -> None:
        """Appends a row; it must have one cell per column."""
        if len(cells) != len(self.columns):
            raise ValueError(f"row must have {len(self.columns)} cells, got {len(cells)}")
        self.rows.append(list(cells))


def _fmt(cell: Cell) -> str:
    if cell is None:
        return "-"
    if isinstance(cell, bool):
        return "yes" if cell else "no"
    if isinstance(cell, float):
        return f"{cell:.4g}"
    return str(cell).replace("|", "\\|")


@dataclass
class Report:
    """A list of sections."""

    title: str
    sections: list[Section] = field(default_factory=list)

    def to_markdown(self) -> str:
        """The report as Markdown tables."""
        lines = [f"# {self.title}", ""]
        for s in self.sections:
            lines += [f"## {s.title}", ""]
            if s.rows:
                lines.append("| " + " | ".join(s.columns) + " |")
                lines.append("|" + "---|" * len(s.columns))
                lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in s.rows]
                lines.append("")
            lines += [f"- {n}" for n in s.notes]
            if s.notes:
                lines.append("")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data."""
        return asdict(self)

    def to_json(self) -> str:
        """The report as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)
