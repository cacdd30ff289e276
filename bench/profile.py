"""
Summarise a py-spy profile of a node (C{py-spy record --format raw
--threads}, which C{bench/run.py --profile DIR} writes for every scenario).

    python bench/profile.py DIR/claim-each-sqlite.txt [--top 25]

It prints the share of samples per thread, then the functions with the most
samples including what they call (inclusive) and by themselves (self), as
percentages of all samples of the profile.  Without C{--idle} py-spy keeps
only samples where a thread was running, so the percentages are shares of
the node's CPU time.
"""

import argparse
import collections
import re
import sys

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")


def parse(path):
    """
    Yield C{(thread, frames, count)} for each line of a collapsed-stack file;
    a frame is C{"function (file)"} without the line number.
    """
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            parts = stack.split(";")
            thread = "all"
            if parts and parts[0].startswith("thread ("):
                thread = parts[0].split(": ", 1)[-1]
                parts = parts[1:]
                if parts and not _FRAME.match(parts[0]):
                    thread = parts[0]
                    parts = parts[1:]
            frames = []
            for part in parts:
                match = _FRAME.match(part)
                if match:
                    frames.append("%s (%s)" % (match["function"], match["file"]))
                else:
                    frames.append(part)
            yield thread, frames, int(count)


def summarise(path, top=25, thread=None):
    total = 0
    threads = collections.Counter()
    inclusive = collections.Counter()
    selfTime = collections.Counter()
    for name, frames, count in parse(path):
        if thread and thread not in name:
            continue
        total += count
        threads[name] += count
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            selfTime[frames[-1]] += count
    lines = ["%s: %d samples" % (path, total)]
    if not total:
        return "\n".join(lines)
    lines.append("threads:")
    for name, count in threads.most_common():
        lines.append("  %5.1f%%  %s" % (100.0 * count / total, name))
    lines.append("inclusive (function and what it calls):")
    for frame, count in inclusive.most_common(top):
        lines.append("  %5.1f%%  %s" % (100.0 * count / total, frame))
    lines.append("self:")
    for frame, count in selfTime.most_common(top):
        lines.append("  %5.1f%%  %s" % (100.0 * count / total, frame))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profiles", nargs="+")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--thread", help="only threads whose name contains this")
    options = parser.parse_args(argv)
    for path in options.profiles:
        print(summarise(path, options.top, options.thread))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
