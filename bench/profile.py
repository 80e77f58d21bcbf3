"""Summarise a py-spy raw profile of the gunicorn workers (as `bench/run --profile DIR` records them).

    python -m bench.profile DIR/users_me.txt [--top 25] [--focus authsvc/]

Prints, over the samples of the workers' request handling:
  * where the time goes by library (the package of the innermost frame);
  * inclusive time of the service's own call sites (every `authsvc/` frame on the stack, file:line);
  * the innermost `authsvc/` frame of each sample (which line of ours led to the work), and its leaf library;
  * the hottest leaf functions.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import Counter

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?):(?P<line>\d+)\)$")


def parse(path: str):
    """Yield (frames, count) per stack, without py-spy's leading process frames."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():  # a frame name with a line break in it (py-spy writes it as is)
                continue
            frames = [f for f in stack.split(";") if not f.startswith("process ")]
            yield frames, int(count)


def package(frame: str) -> str:
    """The library a frame belongs to (its package, or authsvc/<module>)."""
    m = FRAME.match(frame)
    if not m:
        return frame
    file = m.group("file")
    if file.startswith("authsvc/"):
        return "authsvc/" + file.split("/")[1].removesuffix(".py")
    if "/" not in file:
        return "stdlib:" + file.removesuffix(".py")
    return file.split("/")[0]


def short(frame: str) -> str:
    """A frame as `function (path:line)` with the site-packages prefix cut."""
    m = FRAME.match(frame)
    return f"{m.group('func')} ({m.group('file')}:{m.group('line')})" if m else frame


def summarise(path: str, top: int = 25, focus: str = "authsvc/") -> str:
    """The report for one raw profile."""
    total = busy = 0
    by_lib, inclusive, innermost, leaves = Counter(), Counter(), Counter(), Counter()
    for frames, count in parse(path):
        total += count
        if not any("handle_request" in f for f in frames):
            continue  # the master, the mail sender thread, or a worker between requests
        busy += count
        leaf = frames[-1]
        by_lib[package(leaf)] += count
        leaves[short(leaf)] += count
        ours = [f for f in frames if FRAME.match(f) and FRAME.match(f).group("file").startswith(focus)]
        for frame in dict.fromkeys(short(f) for f in ours):
            inclusive[frame] += count
        if ours:
            innermost[(short(ours[-1]), package(leaf))] += count
    if not busy:
        return f"{path}: no request-handling samples"
    pct = lambda n: f"{100 * n / busy:5.1f}%"  # noqa: E731
    out = [f"{path}: {busy} samples handling requests ({total} in all)", "", "time by library (innermost frame):"]
    out += [f"  {pct(n)}  {lib}" for lib, n in by_lib.most_common(top)]
    out += ["", f"inclusive time of {focus} call sites:"]
    out += [f"  {pct(n)}  {frame}" for frame, n in inclusive.most_common(top)]
    out += ["", f"innermost {focus} frame -> library doing the work:"]
    out += [f"  {pct(n)}  {frame} -> {lib}" for (frame, lib), n in innermost.most_common(top)]
    out += ["", "hottest leaf functions:"]
    out += [f"  {pct(n)}  {frame}" for frame, n in leaves.most_common(top)]
    return "\n".join(out)


def main(argv=None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--focus", default="authsvc/")
    args = parser.parse_args(argv)
    for path in args.files:
        print(summarise(path, args.top, args.focus))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
