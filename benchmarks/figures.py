"""The one table every benchmark prints: each figure with its rate, the ratio against the naive way
measured in the same run, model FLOP or bandwidth utilisation where it applies, and the issue's target."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One measured figure. A section's first figure is the project's way; a later figure that is a
    naive way carries ``ratio``, how many times faster the project's way is than it (measured in the
    same run, per the same unit of work); ``target`` is the issue's minimum for that ratio, ``most`` its
    maximum where the figure is the project's slower way that must stay close (the paper's mode)."""

    section: str
    what: str
    value: float
    unit: str
    ratio: float | None = None
    target: float | None = None
    most: float | None = None
    utilisation: str = ""
    note: str = ""

    @property
    def met(self) -> bool | None:
        """Whether the target is met; ``None`` without a target."""
        if self.most is not None:
            return self.ratio is not None and self.ratio <= self.most
        if self.target is None:
            return None
        return self.ratio is not None and self.ratio >= self.target

    @property
    def verdict(self) -> str:
        if self.met is None:
            return ""
        bound = f"<= {self.most:g}x" if self.most is not None else f">= {self.target:g}x"
        return f"{bound} {'met' if self.met else 'NOT MET'}"


def format_table(figures: list[Figure]) -> str:
    """A plain-text table, one block per section; the ratio column reads "the section's first way is
    this many times faster"."""
    width = max(len(f.what) for f in figures)
    lines = []
    section = None
    for f in figures:
        if f.section != section:
            section = f.section
            lines += ["", f"== {section}"]
        value = f"{f.value:,.3g} {f.unit}" if abs(f.value) < 1000 else f"{f.value:,.0f} {f.unit}"
        ratio = f"{f.ratio:.1f}x" if f.ratio is not None else ""
        cells = [f.what.ljust(width), value.rjust(20), ratio.rjust(8), f.utilisation.rjust(14), f.verdict]
        line = "  ".join(cells).rstrip()
        lines.append(line + (f"  ({f.note})" if f.note else ""))
    return "\n".join(lines).lstrip("\n")
