"""Ring all-reduce timing inside a network namespace whose loopback may be rate-limited with
``tc`` (for ``bench_comm.py``; a helper module, not a bench: pytest does not collect it).

``python benches/netshape.py --n N --repeats R --world W`` prints one JSON line: what
:func:`ferrolm.testing.comm.ring_times` returns. :func:`run_ring_bench` runs exactly that inside
a fresh namespace.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

__all__ = ["run_ring_bench"]


def run_ring_bench(
    n: int, repeats: int = 2, rate: str | None = None, scheme: str = "blockwise"
) -> dict[str, Any]:
    """Runs :func:`~ferrolm.testing.comm.ring_times` in a fresh network namespace; with ``rate``
    (e.g. ``"1gbit"``) its loopback is shaped with a ``tc`` token bucket, so both ranks talk
    over 127.0.0.1 through that limit. Needs root and ``ip``/``tc`` (iproute2); returns
    ``{"skipped": why}`` when the namespace cannot be made."""
    ip, tc = shutil.which("ip"), shutil.which("tc")
    if ip is None or tc is None:
        return {"skipped": "`ip`/`tc` not found (apt-get install iproute2)"}
    name = f"ferrolm-{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run([ip, "netns", "add", name], check=True, capture_output=True)
    except subprocess.CalledProcessError as e:
        return {"skipped": f"cannot create a network namespace: {e.stderr.decode().strip()}"}
    try:
        ns = [ip, "netns", "exec", name]
        subprocess.run([*ns, ip, "link", "set", "lo", "up"], check=True, capture_output=True)
        if rate is not None:
            # Both ranks share this one egress queue: the whole exchange flows through `rate`.
            shape = ["qdisc", "add", "dev", "lo", "root", "tbf", "rate", rate]
            shape += ["burst", "256kb", "latency", "100ms"]
            subprocess.run([*ns, tc, *shape], check=True, capture_output=True)
        cmd = [*ns, sys.executable, str(Path(__file__).resolve())]
        cmd += ["--n", str(n), "--repeats", str(repeats), "--scheme", scheme]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        result["link"] = f"netns loopback shaped with tc tbf {rate}" if rate else "netns loopback"
        return result
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"ring bench failed: {e.stderr}") from e
    finally:
        subprocess.run([ip, "netns", "del", name], capture_output=True)


def main() -> None:
    from ferrolm.testing.comm import ring_times

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1 << 22)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--scheme", default="blockwise")
    a = parser.parse_args()
    print(json.dumps(ring_times(a.n, a.repeats, a.world, a.scheme)))


if __name__ == "__main__":
    main()
