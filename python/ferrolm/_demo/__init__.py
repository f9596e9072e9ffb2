"""`ferrolm demo`: run every capability on built-in defaults and report timings vs baselines.

Each capability contributes one function returning a :class:`~ferrolm._report.Section`; they
are listed in :data:`SECTIONS` in the order they print.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from ferrolm._demo import comm, generate, prune, prune_photo, speculative, tokens
from ferrolm._doctor import doctor_section
from ferrolm._report import Report, Section

SECTIONS: list[Callable[[], Section]] = [
    doctor_section,
    comm.demo_section,
    speculative.demo_section,
    generate.demo_section,
    prune.demo_section,
    prune_photo.demo_section,
    tokens.demo_section,
]

logger = logging.getLogger(__name__)


def run_demo(progress: Callable[[str], None] = logger.info) -> Report:
    """Runs every section; a section that fails is reported, not fatal.

    Progress lines ("running: ...") go to ``progress``, by default the ``ferrolm`` logger.
    """
    report = Report("ferrolm demo")
    for make in SECTIONS:
        name = (make.__doc__ or make.__name__).strip().splitlines()[0]
        progress(f"running: {name}")
        start = time.perf_counter()
        try:
            section = make()
        except Exception as e:  # report and go on: one broken capability must not hide the rest
            section = Section(make.__name__, ["error"], [[f"{type(e).__name__}: {e}"]])
        section.notes.append(f"section took {time.perf_counter() - start:.1f} s")
        report.sections.append(section)
    return report
