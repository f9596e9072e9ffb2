"""`ferrolm cache ls|clear`: the checkpoints converted from GGUF files, and their disk use."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

from ferrolm._cli_common import EXIT_CODES_HELP, EXIT_OK, UsageError, logger, to_json, write_output
from ferrolm._gguf_cache import (
    DEFAULT_MAX_GB,
    cache_entries,
    cache_limit,
    cache_root,
    remove_entry,
)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # unreachable: the loop returns at GiB


def add_cache_parser(sub: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Registers `ferrolm cache`."""
    p = sub.add_parser(
        "cache",
        parents=parents,
        help="list or clear the models converted from GGUF",
        description="The converted checkpoints live under $FERROLM_CACHE, else $HF_HOME/ferrolm, "
        "else $XDG_CACHE_HOME/ferrolm, else ~/.cache/ferrolm. The cache is capped at "
        f"$FERROLM_CACHE_MAX_GB GB (default {DEFAULT_MAX_GB:g}; 'none': no cap): each time a "
        "conversion is written, the least recently used entries are deleted until the cache "
        "fits, never the entry just written nor one that a running process is loading.",
        epilog=EXIT_CODES_HELP,
    )
    cache_sub = p.add_subparsers(dest="cache_command", metavar="SUBCOMMAND")
    ls = cache_sub.add_parser("ls", parents=parents, help="list the entries and their sizes")
    ls.add_argument("--json", metavar="FILE", help="write the list as JSON to FILE (-: stdout)")
    ls.set_defaults(func=run_ls)
    clear = cache_sub.add_parser("clear", parents=parents, help="delete entries")
    clear.add_argument("names", nargs="*", help="entries to delete (as `ls` names them)")
    clear.add_argument("--all", action="store_true", help="delete every entry")
    clear.set_defaults(func=run_clear)


def run_ls(args: argparse.Namespace) -> int:
    """Body of `ferrolm cache ls`."""
    root = cache_root()
    entries = cache_entries(root)
    limit = cache_limit()
    if args.json is not None:
        items = [
            {"name": e.name, "bytes": e.size, "modified": e.modified, "last_used": e.last_used}
            for e in entries
        ]
        document = {"root": str(root), "max_bytes": limit, "entries": items}
        write_output(args.json, to_json(document))
    if args.json != "-":
        cap = "no cap" if limit is None else f"cap {limit / 1e9:g} GB"
        print(f"{root}: {len(entries)} entries, {_size(sum(e.size for e in entries))} ({cap})")
        if entries:
            print(f"{'size':>10}  {'last used':16}  name")
        for e in entries:
            stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
            print(f"{_size(e.size):>10}  {stamp}  {e.name}")
    return EXIT_OK


def run_clear(args: argparse.Namespace) -> int:
    """Body of `ferrolm cache clear`."""
    if bool(args.names) == bool(args.all):
        raise UsageError("give the entries to delete, or --all (not both)")
    entries = cache_entries()
    by_name = {e.name: e for e in entries}
    unknown = [n for n in args.names if n not in by_name]
    if unknown:
        raise UsageError(f"no cache entry named {unknown[0]!r}; see `ferrolm cache ls`")
    chosen = entries if args.all else [by_name[n] for n in args.names]
    busy = []
    for e in chosen:
        if remove_entry(e):
            logger.info("deleted %s (%s)", e.name, _size(e.size))
        else:
            busy.append(e.name)
    if busy:
        raise RuntimeError(f"in use by a running process, not deleted: {', '.join(busy)}")
    return EXIT_OK
