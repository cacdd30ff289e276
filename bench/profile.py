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


# Where a sample's time goes, judged from its innermost frame that matches:
# (name, substrings of "function (file)").  Checked leaf first, in this order.
CATEGORIES = [
    ("waiting (epoll, idle pool thread)", ["EPollReactor.doPoll", "Condition.wait ("]),
    (
        "access log and logging",
        [
            "combinedLogFormatter",
            "HTTPFactory.log",
            "Site.log",
            "twisted/logger/",
            "log.msg",
            "legacyLog",
            "_escape (twisted/web/http.py)",
            "datetimeToString",
        ],
    ),
    ("SQLite: COMMIT/BEGIN and SQL", ["marconi/storage/sqlite", "sqlite3"]),
    (
        "thread hand-off (threadpool, callFromThread)",
        [
            "twisted/_threads/",
            "threadpool.py",
            "queue.py",
            "threading.py",
            "callFromThread",
            "wakeUp",
            "untilConcludes",
            "twisted/internet/threads.py",
        ],
    ),
    ("media types (email.headerregistry)", ["email/"]),
    ("JSON encode/decode", ["json/", "marconi/core/jsontext.py"]),
    ("Klein + werkzeug routing", ["klein/", "werkzeug/"]),
    ("Marconi api layer", ["marconi/api/"]),
    ("Marconi core", ["marconi/core/", "marconi/auth", "marconi/kernel"]),
    ("Deferreds", ["twisted/internet/defer.py"]),
    ("twisted.web HTTP parse/respond", ["twisted/web/", "twisted/protocols/basic.py"]),
    # Connection.doRead's own time is the recv() call and taking the GIL
    # back after it: large only when another thread holds the GIL.
    (
        "reactor, TCP I/O (and GIL waits after recv)",
        ["twisted/internet/", "twisted/python/log.py", "twisted/python/context.py"],
    ),
]


def category(frames):
    for frame in reversed(frames):
        for name, needles in CATEGORIES:
            for needle in needles:
                if needle in frame:
                    return name
    return "other"


def summarise(path, top=25, thread=None):
    total = 0
    threads = collections.Counter()
    inclusive = collections.Counter()
    selfTime = collections.Counter()
    categories = collections.Counter()
    for name, frames, count in parse(path):
        if thread and thread not in name:
            continue
        total += count
        threads[name] += count
        categories[category(frames)] += count
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
    waiting = categories.get(CATEGORIES[0][0], 0)
    busy = total - waiting
    lines.append("where the time goes (% of samples; % of busy samples):")
    for name, count in categories.most_common():
        lines.append(
            "  %5.1f%%  %5s  %s"
            % (
                100.0 * count / total,
                "-"
                if name == CATEGORIES[0][0] or not busy
                else "%.1f%%" % (100.0 * count / busy),
                name,
            )
        )
    lines.append("inclusive (function and what it calls):")
    for frame, count in inclusive.most_common(top):
        lines.append("  %5.1f%%  %s" % (100.0 * count / total, frame))
    lines.append("self:")
    for frame, count in selfTime.most_common(top):
        lines.append("  %5.1f%%  %s" % (100.0 * count / total, frame))
    return "\n".join(lines)


def areas(path, thread=None):
    """
    The share of busy samples (waiting left out) per area of L{CATEGORIES}.
    """
    counts = collections.Counter()
    for name, frames, count in parse(path):
        if thread and thread not in name:
            continue
        counts[category(frames)] += count
    counts.pop(CATEGORIES[0][0], None)
    busy = sum(counts.values()) or 1
    return {name: 100.0 * count / busy for name, count in counts.items()}


def areaTable(paths, thread=None) -> str:
    """
    A markdown table: one column per profile, one row per area, in % of the
    busy samples of each profile.
    """
    columns = [areas(path, thread) for path in paths]
    names = [name for name, _ in CATEGORIES[1:]] + ["other"]
    names.sort(key=lambda name: -sum(column.get(name, 0) for column in columns))
    titles = [path.rsplit("/", 1)[-1].rsplit(".", 1)[0] for path in paths]
    lines = ["| area | " + " | ".join(titles) + " |", "|---|" + "---:|" * len(paths)]
    for name in names:
        lines.append(
            "| %s | %s |"
            % (name, " | ".join("%.1f" % (column.get(name, 0),) for column in columns))
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profiles", nargs="+")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--thread", help="only threads whose name contains this")
    parser.add_argument(
        "--table",
        action="store_true",
        help="one markdown table of areas for all profiles",
    )
    options = parser.parse_args(argv)
    if options.table:
        print(areaTable(options.profiles, options.thread))
        return 0
    for path in options.profiles:
        print(summarise(path, options.top, options.thread))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
