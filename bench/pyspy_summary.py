"""Summarise py-spy profiles (`py-spy record --format raw`, i.e. collapsed stacks).

    python bench/pyspy_summary.py PROFILE.txt [PROFILE.txt ...]

Prints, over all the files together: the share of samples by package where the CPU actually
was (self time), the functions with the most self time, and the functions of Strongroom's own
code with the most inclusive time (the sample was anywhere under them).
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# py-spy shortens paths to the part below site-packages (or the stdlib directory): the first
# component names the package.
_PACKAGES = {
    "strongroom": "strongroom",
    "sqlalchemy": "sqlalchemy",
    "asyncpg": "asyncpg",
    "pydantic": "pydantic",
    "pydantic_core": "pydantic",
    "fastapi": "fastapi",
    "starlette": "starlette",
    "uvicorn": "uvicorn",
    "structlog": "structlog",
    "anyio": "anyio",
    "uvloop": "uvloop",
}


def _bucket(path: str) -> str:
    for marker in ("site-packages/", "src/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    top = path.split("/", 1)[0]
    if top in _PACKAGES:
        return _PACKAGES[top]
    return "stdlib / other" if "/" in path or path.endswith(".py") else "native / other"


def _is_strongroom(frame: str) -> bool:
    return _bucket(_file(frame)) == "strongroom"


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "src/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['func']} ({path})"


def _file(frame: str) -> str:
    match = _FRAME.match(frame)
    return match["file"] if match else ""


# Leaf functions of a thread that is blocked, not busy. py-spy's own idle detection misses these
# in some containers: anyio's worker threads waiting for work, uvicorn's supervisor pipe.
_IDLE_LEAVES = {
    "Condition.wait",
    "Condition._acquire_restore",
    "Condition._release_save",
    "Connection._recv",
    "Connection._poll",
    "Connection.poll",
    "Queue.get",
    "Event.wait",
    "Thread.join",
    "select",
    "epoll_wait",
}


def _func(frame: str) -> str:
    match = _FRAME.match(frame)
    return match["func"] if match else frame


def load(paths: list[Path]) -> list[tuple[list[str], int]]:
    stacks = []
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            # py-spy puts the thread name first ("process 123:\"...\";thread (...)"); drop it.
            frames = [f for f in stack.split(";") if "(" in f and not f.startswith("thread (")]
            stacks.append((frames, int(count)))
    return stacks


def main() -> int:
    paths = [Path(p) for p in sys.argv[1:] if Path(p).exists() and Path(p).stat().st_size]
    if not paths:
        print("profile: no py-spy output to summarise", file=sys.stderr)
        return 1
    everything = load(paths)
    stacks = [(f, n) for f, n in everything if f and _func(f[-1]) not in _IDLE_LEAVES]
    idle = sum(n for _, n in everything) - sum(n for _, n in stacks)
    total = sum(count for _, count in stacks)
    if not total:
        print("profile: no samples", file=sys.stderr)
        return 1
    self_by_bucket: Counter[str] = Counter()
    self_by_func: Counter[str] = Counter()
    incl_by_func: Counter[str] = Counter()
    for frames, count in stacks:
        if not frames:
            continue
        leaf = frames[-1]
        self_by_bucket[_bucket(_file(leaf))] += count
        self_by_func[_short(leaf)] += count
        for frame in {_short(f) for f in frames if _is_strongroom(f)}:
            incl_by_func[frame] += count

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f}%"

    print(
        f"py-spy: {total} samples of busy threads from {len(paths)} process(es) "
        f"({idle} samples of blocked threads left out)"
    )
    print("\nSelf time by package (where the CPU was):")
    for name, n in self_by_bucket.most_common():
        print(f"  {pct(n)}  {name}")
    print("\nTop functions by self time:")
    for name, n in self_by_func.most_common(25):
        print(f"  {pct(n)}  {name}")
    print("\nStrongroom functions by inclusive time (sample anywhere below them):")
    for name, n in incl_by_func.most_common(30):
        print(f"  {pct(n)}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
