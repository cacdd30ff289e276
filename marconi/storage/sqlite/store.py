"""
The embedded SQLite store, Marconi's default.

All SQL runs on one dedicated thread that owns the connection, so the reactor
thread never waits on the disk and every operation is serialised: each call
is one transaction (C{BEGIN IMMEDIATE} ... C{COMMIT}), which makes
batch posts, claims and pops atomic, and a claim can never take a message
that another live claim holds.

The thread is a plain L{threading.Thread} woken through a
L{queue.SimpleQueue} (cheaper per call than Twisted's general
L{ThreadPool}); calls that arrive while it is busy are committed together
(group commit, see L{SQLiteStore._run}), and results come back to the
reactor with C{callFromThread}.  C{twisted.enterprise.adbapi} was not used because it
reads the global reactor, runs one transaction per call, and leaves
transaction boundaries to the DB-API module's implicit rules, where we want
explicit C{BEGIN IMMEDIATE} and many calls per commit.

The database runs in WAL mode.  C{synchronous} is C{FULL} by default: when a
post is acknowledged its transaction is on disk, safe from a process kill
and from a power loss.  C{sqlite:PATH?synchronous=normal} trades the power
loss case for speed (still safe from a process kill).

Safety levels (L{marconi.core.durability}): C{durable} commits with the
URI's C{synchronous} setting; C{fast} commits with C{synchronous=NORMAL}
(or the URI's setting where that is weaker), so the commit is in the WAL
file in the operating system's cache, without waiting for the disk: safe
from a process kill, not from a power loss until the next C{durable} commit
or checkpoint.  A group commit is made at the strongest level any of its
calls asked for.  There are no replicas, so no C{replicated}.  See
docs/storage.rst.
"""

import json
import sqlite3
import threading
from collections import deque
from os import urandom
from queue import SimpleQueue
from typing import Any, Callable, Optional, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from marconi.core import models, reserved, rules
from marconi.core.audit import RIVER, recordEvents
from marconi.core.durability import DURABLE, FAST, LOCAL_LEVELS, parseDurability
from marconi.core.errors import (
    ClaimDoesNotExist,
    QueueDoesNotExist,
    StorageUnavailable,
)
from marconi.core.interfaces import IMessageStore, IQueueDepths
from marconi.core.models import Claim, ClaimSpec, Message, makeMessage
from marconi.storage import transfer
from marconi.storage.events import StoreEvents
from marconi.storage.sqlite.uri import DEFAULT_PAGE_SIZE, parseURI

# Each queue's count of stored message rows (live, or expired and not yet
# purged).  Every statement that adds or removes rows is followed, in its
# transaction, by one change of the count by the rows it added or removed
# (L{_count}).  A row stays when its queue is deleted.
_COUNTS_TABLE = """
CREATE TABLE IF NOT EXISTS queue_counts (
    project TEXT NOT NULL,
    queue TEXT NOT NULL,
    stored INTEGER NOT NULL,
    PRIMARY KEY (project, queue)
) WITHOUT ROWID;
"""

# Claims and pops read a queue's unclaimed rows (never claimed, released, or
# whose claim ended) in marker order on messages_unclaimed, so a claim never
# walks past the rows live claims hold.  A claimed row is on
# messages_claimed, by the end of its claim: a claim first hands the rows
# whose claim ended back to messages_unclaimed, where they take their marker
# place again.  Both are partial, usable only by a query naming
# "claim_id IS NULL" or "claim_id IS NOT NULL", so listings and stats keep
# messages_by_marker.
_CLAIM_INDEXES = """
CREATE INDEX IF NOT EXISTS messages_unclaimed
    ON messages (project, queue, marker) WHERE claim_id IS NULL;
CREATE INDEX IF NOT EXISTS messages_claimed
    ON messages (project, queue, claim_expires) WHERE claim_id IS NOT NULL;
"""

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS queues (
    project TEXT NOT NULL,
    name TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (project, name)
) WITHOUT ROWID;

-- Each queue's last marker.  A row stays when its queue is deleted, so a
-- queue never hands out the same marker twice.
CREATE TABLE IF NOT EXISTS markers (
    project TEXT NOT NULL,
    queue TEXT NOT NULL,
    last INTEGER NOT NULL,
    PRIMARY KEY (project, queue)
) WITHOUT ROWID;

-- seq is the row's own key (for its tags); marker is its place in its queue.
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    marker INTEGER NOT NULL,
    id TEXT NOT NULL,
    project TEXT NOT NULL,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    ttl INTEGER NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    visible_at REAL NOT NULL,
    client_id TEXT NOT NULL,
    claim_id TEXT,
    claim_expires REAL,
    claim_count INTEGER NOT NULL DEFAULT 0,
    tags TEXT,
    checksum TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_id ON messages (project, queue, id);
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_marker
    ON messages (project, queue, marker);
CREATE INDEX IF NOT EXISTS messages_by_expiry ON messages (expires);
CREATE INDEX IF NOT EXISTS messages_by_claim
    ON messages (claim_id) WHERE claim_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS message_tags (
    seq INTEGER NOT NULL,
    tag TEXT NOT NULL,
    PRIMARY KEY (seq, tag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS message_tags_by_tag ON message_tags (tag, seq);
CREATE TRIGGER IF NOT EXISTS messages_untag AFTER DELETE ON messages
    WHEN old.tags IS NOT NULL
    BEGIN DELETE FROM message_tags WHERE seq = old.seq; END;

CREATE TABLE IF NOT EXISTS claims (
    project TEXT NOT NULL,
    queue TEXT NOT NULL,
    id TEXT NOT NULL,
    ttl INTEGER NOT NULL,
    grace INTEGER NOT NULL,
    updated REAL NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (project, queue, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS claims_by_expiry ON claims (expires);
"""
    + _COUNTS_TABLE
    + """
-- Stats count, beside the stored count, the expired rows not purged yet
-- (on messages_by_expiry), the claimed rows (through the queue's claims
-- and messages_by_claim) and, here, the rows posted or moved with a delay,
-- by their visibility.  No other index leads with (project, queue) but
-- the partial ones a query must name (below): the planner would take it
-- for listings and claims, which need marker order.
CREATE INDEX IF NOT EXISTS messages_delayed
    ON messages (project, queue, visible_at, expires)
    WHERE visible_at > created;
"""
    + _CLAIM_INDEXES
)

#: The schema version written in C{PRAGMA user_version}.  Version 0 (files
#: written before versions were recorded) gave markers from one counter
#: shared by every queue; version 1 counted rows for queue stats; version 2
#: had no claim indexes (version 3 builds them from the rows, see
#: L{_CLAIM_INDEXES}); version 3 kept the stored counts with a trigger per
#: row (version 4 changes them once per statement).
_VERSION = 4

# From version 0 to 1: the shared counter becomes the rows' own key C{seq};
# existing messages keep their markers, and every existing queue's counter
# starts at the last marker the shared counter gave, so no marker handed
# out before the change is ever given again or skips a newer message.
_MIGRATE_TO_1 = """
DROP TRIGGER IF EXISTS messages_untag;
DROP INDEX IF EXISTS messages_by_queue;
DROP INDEX IF EXISTS message_tags_by_tag;
ALTER TABLE messages RENAME COLUMN marker TO seq;
ALTER TABLE messages ADD COLUMN marker INTEGER NOT NULL DEFAULT 0;
UPDATE messages SET marker = seq;
ALTER TABLE message_tags RENAME COLUMN marker TO seq;
CREATE TABLE markers (
    project TEXT NOT NULL,
    queue TEXT NOT NULL,
    last INTEGER NOT NULL,
    PRIMARY KEY (project, queue)
) WITHOUT ROWID;
INSERT INTO markers (project, queue, last)
    SELECT project, name, COALESCE(
        (SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0)
    FROM queues;
"""

# From version 1 to 2: the stored counts' table (filled from the rows by
# _MIGRATE_TO_4).
_MIGRATE_TO_2 = _COUNTS_TABLE

# From version 3 (or earlier) to 4: the per-row count triggers go, and each
# queue's stored rows are counted again, in the migration's transaction, so
# the counts are exact whatever the file's version; from then on the
# writes keep them (L{_count}).
_MIGRATE_TO_4 = """
DROP TRIGGER IF EXISTS messages_count_in;
DROP TRIGGER IF EXISTS messages_count_out;
UPDATE queue_counts SET stored = 0;
INSERT OR REPLACE INTO queue_counts (project, queue, stored)
    SELECT project, queue, COUNT(*) FROM messages GROUP BY project, queue;
"""

# A message's columns, in the order of L{Message}'s fields (see L{_message}).
_COLUMNS = (
    "id, marker, body, ttl, created, expires, visible_at, client_id, "
    "claim_id, claim_expires, claim_count, tags, checksum"
)

# marconi.core.rules.isClaimable, once _UNCLAIM_ENDED ran.
_CLAIMABLE_SELECT = (
    f"SELECT {_COLUMNS} FROM messages INDEXED BY messages_unclaimed "
    "WHERE project = :project AND queue = :queue AND claim_id IS NULL "
    "AND expires > :now AND visible_at <= :now"
)

# A queue's rows whose claim ended go back to messages_unclaimed.
_UNCLAIM_ENDED = (
    "UPDATE messages INDEXED BY messages_claimed "
    "SET claim_id = NULL, claim_expires = NULL "
    "WHERE project = :project AND queue = :queue "
    "AND claim_id IS NOT NULL AND claim_expires <= :now"
)

_PURGE_BATCH = 1000

# The most calls run in one group transaction.
_GROUP_LIMIT = 256

# How long (ms) the database thread waits for another connection's write
# lock.
_BUSY_TIMEOUT = 5000

# Tells the database thread to finish.
_STOP = object()

# A call waiting for the database thread: the work, its arguments, the
# Deferred its result fires and the synchronous setting its commit needs.
_Work = tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any], str]

# SQLite's synchronous settings, weakest first.
_SYNCHRONOUS_ORDER = ("off", "normal", "full", "extra")

# A finished call: its Deferred, whether it succeeded, and its result or error.
_Outcome = tuple[Deferred[Any], bool, Any]


def _deliver(outcomes: list[_Outcome]) -> None:
    """
    On the reactor thread: fire the Deferreds of a committed batch.
    """
    for d, ok, value in outcomes:
        if ok:
            d.callback(value)
        else:
            d.errback(Failure(value))


def _message(row: Sequence[Any]) -> Message:
    """
    The message of a row of L{_COLUMNS}, whose order is that of
    L{Message}'s fields.
    """
    return makeMessage(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        row[8],
        row[9],
        row[10],
        tuple(json.loads(row[11])) if row[11] else (),
        row[12],
    )


def _tagFilter(tags: Sequence[str], params: dict) -> str:
    """
    SQL requiring every tag of C{tags}, with its parameters added to
    C{params}.
    """
    clauses = []
    for index, tag in enumerate(tags):
        name = f"tag{index}"
        params[name] = tag
        clauses.append(
            " AND EXISTS (SELECT 1 FROM message_tags t "
            f"WHERE t.tag = :{name} AND t.seq = messages.seq)"
        )
    return "".join(clauses)


def _upgrade(connection: sqlite3.Connection) -> None:
    """
    Bring a database to the current schema, in one transaction.
    """
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > _VERSION:
        raise sqlite3.DatabaseError(
            f"the database has schema version {version}, newer than this "
            f"Marconi's {_VERSION}"
        )
    if version == _VERSION:
        return
    existing = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages'"
    ).fetchone()
    script = ""
    if existing is not None:
        old = connection.execute(
            "SELECT 1 FROM pragma_table_info('messages') WHERE name = 'marker'"
        ).fetchone()
        if version < 1 and old is not None:
            script += _MIGRATE_TO_1
        if version < 2:
            script += _MIGRATE_TO_2
        if version < 4:
            script += _MIGRATE_TO_4
    connection.executescript(
        f"BEGIN IMMEDIATE; {script} {_SCHEMA} PRAGMA user_version = {_VERSION}; COMMIT;"
    )


# The tables in which an earlier version recorded its cluster moves, the
# ring it last published and the parts of queues it was taking over.
_MOVE_TABLES = ("cluster_moves", "cluster_state", "cluster_parts")


def _takeOverMoves(connection: sqlite3.Connection) -> None:
    """
    A file of a cluster node of an earlier version keeps its moves in
    progress in tables of their own: they become the record
    L{reserved.UPGRADED_MOVES} (the format of the rebalancer's own record,
    which takes it over when it starts) and the tables are dropped, in one
    transaction.  Staged parts of incoming queues are dropped: the old
    owner sends such a queue again from its start.
    """
    tables = {
        row[0]
        for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN (?, ?, ?)",
            _MOVE_TABLES,
        )
    }
    if not tables:
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        moves: list = []
        published = None
        if "cluster_moves" in tables:
            moves = [
                list(row)
                for row in connection.execute(
                    "SELECT project, queue, direction, peer FROM cluster_moves "
                    "ORDER BY project, queue"
                )
            ]
        if "cluster_state" in tables:
            row = connection.execute(
                "SELECT value FROM cluster_state WHERE name = 'published'"
            ).fetchone()
            published = None if row is None else json.loads(row[0])
        if moves or published is not None:
            connection.execute(
                "INSERT OR REPLACE INTO queues (project, name, metadata, created) "
                "VALUES (?, ?, ?, 0)",
                (
                    reserved.CLUSTER_PROJECT,
                    reserved.UPGRADED_MOVES,
                    json.dumps({"moves": moves, "published": published}),
                ),
            )
        for table in sorted(tables):
            connection.execute(f"DROP TABLE {table}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _takeMarkers(c: sqlite3.Connection, project: str, queue: str, count: int) -> int:
    """
    Reserve the next C{count} markers of a queue.

    @return: the first of them.
    """
    if _RETURNING:
        # fetchall, so that the statement has run to its end.
        ((last,),) = c.execute(
            _TAKE_MARKERS + " RETURNING last", (project, queue, count)
        ).fetchall()
    else:
        c.execute(_TAKE_MARKERS, (project, queue, count))
        (last,) = c.execute(
            "SELECT last FROM markers WHERE project = ? AND queue = ?",
            (project, queue),
        ).fetchone()
    return last - count + 1


_TAKE_MARKERS = (
    "INSERT INTO markers (project, queue, last) VALUES (?, ?, ?) "
    "ON CONFLICT (project, queue) DO UPDATE SET last = last + excluded.last"
)

# RETURNING came with SQLite 3.35; before, the markers are read back.
_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)


# Adds to a queue's stored count (see _COUNTS_TABLE).
_COUNT = (
    "INSERT INTO queue_counts (project, queue, stored) VALUES (?, ?, ?) "
    "ON CONFLICT (project, queue) DO UPDATE SET stored = stored + excluded.stored"
)


def _count(c: sqlite3.Connection, project: str, queue: str, change: int) -> None:
    """
    Change a queue's stored count by C{change} rows, in the caller's
    transaction: once after each statement that adds or removes its rows.
    """
    if change:
        c.execute(_COUNT, (project, queue, change))


def _removed(c: sqlite3.Connection, project: str, queue: str, removed: int) -> int:
    """
    Take C{removed} rows, just deleted, from a queue's stored count.

    @return: C{removed}.
    """
    _count(c, project, queue, -removed)
    return removed


def _countEach(c: sqlite3.Connection, changes: dict) -> None:
    """
    Change the stored counts of several queues, C{changes} mapping each
    C{(project, queue)} to its change, in one statement.
    """
    c.executemany(_COUNT, [(*key, n) for key, n in changes.items() if n])


_INSERT_MESSAGE = (
    "INSERT INTO messages (marker, id, project, queue, body, ttl, created, "
    "expires, visible_at, client_id, claim_count, checksum, tags) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _messageIds(now: float, count: int) -> list[str]:
    """
    C{count} new message ids, 128 bits each as
    L{marconi.core.models.newId} makes them, of which the first 48 count
    the milliseconds of C{now} and the other 80 are random.  The messages posted one after the other then have
    neighbouring ids, so their entries in C{messages_by_id} go to the same
    few pages instead of each to a page anywhere in the index.
    """
    prefix = "%012x" % (int(now * 1000) & 0xFFFFFFFFFFFF)
    random = urandom(10 * count).hex()
    return [prefix + random[i : i + 20] for i in range(0, 20 * count, 20)]


def _insertMessage(
    c: sqlite3.Connection,
    project: str,
    queue: str,
    marker: int,
    messageId: str,
    fields: tuple,
    tags: Sequence[str],
) -> None:
    """
    Insert one message row (C{fields}: body, ttl, created, expires,
    visible_at, client_id, claim_count, checksum) with its tags.
    """
    cursor = c.execute(
        _INSERT_MESSAGE,
        (
            marker,
            messageId,
            project,
            queue,
            *fields,
            json.dumps(list(tags)) if tags else None,
        ),
    )
    if tags:
        c.executemany(
            "INSERT INTO message_tags (seq, tag) VALUES (?, ?)",
            [(cursor.lastrowid, tag) for tag in tags],
        )


class _Post:
    """
    A post of messages to one queue, as the database thread runs it: alone
    (called with the connection), or with the posts queued next to it in
    its group (L{_insertPosts}).
    """

    __slots__ = ("project", "queue", "messages", "clientId", "now")

    def __init__(
        self,
        project: str,
        queue: str,
        messages: tuple[models.NewMessage, ...],
        clientId: str,
        now: float,
    ) -> None:
        self.project = project
        self.queue = queue
        self.messages = messages
        self.clientId = clientId
        self.now = now

    def __call__(self, c: sqlite3.Connection) -> list[str]:
        return _insertPosts(c, [self])[0]


def _insertPosts(c: sqlite3.Connection, posts: Sequence[_Post]) -> list[list[str]]:
    """
    Store several posts, in their order, with the statements of one post
    per queue they go to: each queue's row, one reservation of its markers
    for all its posts, then the rows of every post, and the change of each
    queue's stored count.  Each post's messages keep the times and the
    client of their own post, and each queue's markers follow the order of
    its posts.

    @return: the new ids of each post.
    """
    # Each queue's messages, and the time of its first post.
    queues: dict[tuple[str, str], list] = {}
    for post in posts:
        key = (post.project, post.queue)
        entry = queues.get(key)
        if entry is None:
            queues[key] = [len(post.messages), post.now]
        else:
            entry[0] += len(post.messages)
    markers = {}
    for (project, queue), (count, now) in queues.items():
        c.execute(
            "INSERT OR IGNORE INTO queues (project, name, metadata, created) "
            "VALUES (?, ?, '{}', ?)",
            (project, queue, now),
        )
        markers[project, queue] = _takeMarkers(c, project, queue, count)
    posted = []
    rows = []
    tagged = False
    for post in posts:
        project, queue = key = (post.project, post.queue)
        now, clientId = post.now, post.clientId
        marker = markers[key]
        ids = _messageIds(now, len(post.messages))
        posted.append(ids)
        for messageId, m in zip(ids, post.messages, strict=True):
            fields = (
                m.body,
                m.ttl,
                now,
                now + m.ttl,
                now + m.delay,
                clientId,
                0,
                m.checksum,
            )
            rows.append((project, queue, marker, messageId, fields, m.tags))
            tagged = tagged or bool(m.tags)
            marker += 1
        markers[key] = marker
    if tagged:
        # Each row's tags need its seq: one statement a row.
        for project, queue, marker, messageId, fields, tags in rows:
            _insertMessage(c, project, queue, marker, messageId, fields, tags)
    else:
        c.executemany(
            _INSERT_MESSAGE,
            [
                (marker, messageId, project, queue, *fields, None)
                for project, queue, marker, messageId, fields, _ in rows
            ],
        )
    for (project, queue), (count, _) in queues.items():
        _count(c, project, queue, count)
    return posted


def _units(batch: list[_Work]) -> list[list[_Work]]:
    """
    The calls of a group as it runs them, in order: each call on its own,
    but for the posts queued one after the other, which run together
    (L{_insertPosts}); if they fail, each runs again on its own.
    """
    units: list[list[_Work]] = []
    posts = False
    for item in batch:
        if type(item[0]) is _Post:
            if posts:
                units[-1].append(item)
                continue
            posts = True
        else:
            posts = False
        units.append([item])
    return units


def makeStore(uri: str, reactor: Any, durability: str = DURABLE) -> "SQLiteStore":
    path, synchronous, pageSize = parseURI(uri)
    return SQLiteStore(
        path,
        reactor,
        synchronous=synchronous,
        durability=durability,
        pageSize=pageSize,
    )


def _weaker(a: str, b: str) -> str:
    return min(a, b, key=_SYNCHRONOUS_ORDER.index)


def _stronger(a: str, b: str) -> str:
    return max(a, b, key=_SYNCHRONOUS_ORDER.index)


@implementer(IMessageStore, IQueueDepths)
class SQLiteStore(StoreEvents, Service):
    """
    An L{IMessageStore} in a SQLite database file.

    @param synchronous: the C{synchronous} setting of C{durable} commits.
    @param durability: the level of the calls that ask for none.
    @param pageSize: the page size of the file if the store creates it (a
        file that exists keeps its own).
    """

    log = Logger()

    def __init__(
        self,
        path: str,
        reactor: Any,
        synchronous: str = "full",
        durability: str = DURABLE,
        pageSize: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.pageSize = pageSize
        self.durability = parseDurability(durability)
        # The synchronous setting each level commits with.
        self._modes = {
            FAST: _weaker("normal", synchronous),
            DURABLE: synchronous,
        }
        self._mode = synchronous
        self._reactor = reactor
        self._accepting = False
        self._connection: Optional[sqlite3.Connection] = None
        self._pending: deque[_Work] = deque()
        # A group is running, committing or about to start (or the
        # database is opening): calls wait in _pending.
        self._busy = True
        self._stopping = False
        self._unavailable: Optional[StorageUnavailable] = None

    # Life cycle.

    def startService(self) -> None:
        super().startService()
        self._wake: SimpleQueue[object] = SimpleQueue()
        self._thread = threading.Thread(
            target=self._serve, name="marconi-sqlite", daemon=True
        )
        self._accepting = True
        self._busy = True
        self._stopping = False
        self._thread.start()

    def stopService(self) -> Any:
        super().stopService()
        if not self._accepting:
            return None
        self._accepting = False
        self._stopped: Deferred[None] = Deferred()
        # The thread stops once what is pending has been run.
        self._stopping = True
        if not self._busy:
            self._wake.put(_STOP)
        return self._stopped

    def _serve(self) -> None:
        """
        The database thread: open the database, then run and commit the
        groups the reactor thread hands it until told to stop; then close
        it.
        """
        try:
            self._open()
        except Exception:
            self.log.failure("Cannot open the SQLite database {path}", path=self.path)
        self._reactor.callFromThread(self._next)
        while True:
            order: Any = self._wake.get()
            if order is _STOP:
                break
            try:
                outcomes = self._runBatch(order)
            except Exception as e:
                # Whatever escaped (a savepoint SQLite had already ended, a
                # connection that cannot be opened): the group fails, the
                # thread goes on.
                self.log.failure("SQLite group failed")
                if self._connection is not None and self._connection.in_transaction:
                    try:
                        self._connection.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                error = StorageUnavailable(f"The SQLite store failed: {e}")
                outcomes = [(item[2], False, error) for item in order]
            self._reactor.callFromThread(self._finished, outcomes)
        try:
            self._close()
        finally:
            self._reactor.callFromThread(self._stopped.callback, None)

    def _open(self) -> None:
        connection = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False
        )
        try:
            # Taken by a new, empty file only (before it is in WAL mode).
            connection.execute(f"PRAGMA page_size={int(self.pageSize)}")
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            self._mode = self.synchronous
            connection.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT}")
            # The savepoints of a group keep their undo pages in memory.
            connection.execute("PRAGMA temp_store=MEMORY")
            _upgrade(connection)
            _takeOverMoves(connection)
        except BaseException:
            # A migration that failed halfway leaves its transaction open:
            # closing rolls it back and releases the file's write lock now,
            # not when the connection is collected.
            connection.close()
            raise
        self._connection = connection

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    # Running work on the database thread.

    def durabilities(self) -> tuple:
        return LOCAL_LEVELS

    def _run(
        self, work: Callable[..., Any], *args: Any, durability: Optional[str] = None
    ) -> Deferred[Any]:
        """
        Run C{work(connection, *args)} atomically, in order with every
        other call.

        Calls that arrive while a transaction is running or committing are
        run together in the next transaction (group commit), each inside
        its own savepoint: a call that fails is rolled back alone, and
        every result is delivered only after the whole transaction
        committed.  Under load this turns many small commits (and fsyncs)
        into one.  Posts queued one after the other share their statements
        and their savepoint (see L{_units}); if they fail, each runs again
        on its own.

        The reactor thread hands the database thread one group at a time
        and the next when that one is done, so the two threads trade the
        interpreter lock once per group.  A call that finds the database
        thread idle does not start a group of its own: the group starts
        once the reactor has handled the events at hand (see L{_start}), so
        that the requests that arrived together are committed together.
        Otherwise the first of them would be committed alone, the others
        would wait for that commit, and the reactor would idle while they
        commit in turn.

        @param durability: the level of the commit (by default the
            store's); the group is committed at the strongest level asked.
        @return: a L{Deferred} firing with C{work}'s result.
        """
        if not self._accepting:
            return fail(StorageUnavailable("The SQLite store is not running."))
        level = self.durability if durability is None else parseDurability(durability)
        d: Deferred[Any] = Deferred()
        self._pending.append((work, args, d, self._modes[level]))
        if not self._busy:
            self._start()
        return d

    def _start(self) -> None:
        """
        On the reactor thread, with the database thread idle: hand it the
        pending calls, those made until now and those made while the
        reactor handles the rest of the events it has at hand, at the end
        of this turn of the reactor.
        """
        self._busy = True
        self._reactor.callLater(0, self._next)

    def _next(self) -> None:
        """
        On the reactor thread: hand the next group of pending calls to the
        database thread, if there is one.
        """
        if self._pending:
            self._busy = True
            batch: list[_Work] = []
            while self._pending and len(batch) < _GROUP_LIMIT:
                batch.append(self._pending.popleft())
            self._wake.put(batch)
            return
        self._busy = False
        if self._stopping:
            self._wake.put(_STOP)

    def _finished(self, outcomes: list[_Outcome]) -> None:
        """
        On the reactor thread: a group committed (or failed); deliver its
        results and start the next.
        """
        _deliver(outcomes)
        self._next()

    def _runBatch(self, batch: list[_Work]) -> list[_Outcome]:
        """
        Run and commit a group of calls on the calling thread.
        """
        outcomes = self._runWorks(batch)
        return self._commit(batch, outcomes)

    def _runWorks(self, batch: list[_Work]) -> Optional[list[_Outcome]]:
        """
        Begin a transaction and run each call of C{batch} in its own
        savepoint (a call alone in it needs none).

        @return: each call's outcome, or L{None} if the transaction did not
            begin or SQLite ended it.
        """
        mode = batch[0][3]
        for item in batch[1:]:
            mode = _stronger(mode, item[3])
        try:
            connection = self._connect()
            if mode != self._mode:
                # Outside a transaction, so that it applies to this commit.
                connection.execute(f"PRAGMA synchronous={mode.upper()}")
                self._mode = mode
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            self._unavailable = StorageUnavailable(
                f"The SQLite store is unavailable: {e}"
            )
            return None
        outcomes: list[_Outcome] = []
        # The units still to run, the next last.
        units = _units(batch)[::-1]
        # A unit alone in its transaction needs no savepoint of its own.
        alone = len(units) == 1
        while units:
            unit = units.pop()
            if not alone:
                connection.execute("SAVEPOINT work")
            try:
                if len(unit) == 1:
                    work, args, *_ = unit[0]
                    values = [work(connection, *args)]
                else:
                    posts: list[Any] = [item[0] for item in unit]
                    values = _insertPosts(connection, posts)
            except Exception as e:
                try:
                    if alone:
                        # A new, empty transaction for the commit to end.
                        if connection.in_transaction:
                            connection.execute("ROLLBACK")
                        connection.execute("BEGIN")
                    else:
                        connection.execute("ROLLBACK TO work")
                        connection.execute("RELEASE work")
                except sqlite3.Error as undo:
                    # SQLite ended the whole transaction (a full disk, an
                    # I/O error): nothing of the group is kept, and every
                    # call of it fails.
                    self.log.error("SQLite error: {error}", error=undo)
                    if connection.in_transaction:
                        try:
                            connection.execute("ROLLBACK")
                        except sqlite3.Error:
                            pass
                    self._unavailable = StorageUnavailable(
                        f"The SQLite store failed: {undo}"
                    )
                    return None
                if len(unit) > 1:
                    # One of the posts failed: each is run again on its
                    # own, so that only the one at fault fails.
                    alone = False
                    units.extend([item] for item in reversed(unit))
                    continue
                if isinstance(e, sqlite3.Error):
                    self.log.error("SQLite error: {error}", error=e)
                    e = StorageUnavailable(f"The SQLite store failed: {e}")
                outcomes.extend((item[2], False, e) for item in unit)
            else:
                if not alone:
                    connection.execute("RELEASE work")
                outcomes.extend(
                    (item[2], True, value)
                    for item, value in zip(unit, values, strict=True)
                )
        return outcomes

    def _commit(
        self, batch: list[_Work], outcomes: Optional[list[_Outcome]]
    ) -> list[_Outcome]:
        """
        Commit the transaction that ran C{batch} (see L{_runWorks}).

        @return: the calls' outcomes, or a failure for each if the
            transaction did not begin or commit.
        """
        if outcomes is None:
            return [(item[2], False, self._unavailable) for item in batch]
        connection = self._connect()
        try:
            connection.execute("COMMIT")
        except sqlite3.Error as e:
            self.log.error("SQLite commit failed: {error}", error=e)
            try:
                connection.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            error = StorageUnavailable(f"The SQLite store failed to commit: {e}")
            return [(item[2], False, error) for item in batch]
        return outcomes

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self._open()
        assert self._connection is not None
        return self._connection

    # IMessageStore.

    def ping(self) -> Any:
        return self._run(lambda c: c.execute("SELECT 1").fetchone()[0] == 1)

    def createQueue(self, project: str, name: str, metadata: dict, now: float) -> Any:
        def work(c: sqlite3.Connection) -> bool:
            cursor = c.execute(
                "INSERT OR IGNORE INTO queues (project, name, metadata, created) "
                "VALUES (?, ?, ?, ?)",
                (project, name, json.dumps(metadata), now),
            )
            return cursor.rowcount == 1

        return self._run(work)

    def getQueueMetadata(self, project: str, name: str) -> Any:
        def work(c: sqlite3.Connection) -> dict:
            row = c.execute(
                "SELECT metadata FROM queues WHERE project = ? AND name = ?",
                (project, name),
            ).fetchone()
            if row is None:
                raise QueueDoesNotExist(name)
            return json.loads(row[0])

        return self._run(work)

    def setQueueMetadata(self, project: str, name: str, metadata: dict) -> Any:
        def work(c: sqlite3.Connection) -> None:
            cursor = c.execute(
                "UPDATE queues SET metadata = ? WHERE project = ? AND name = ?",
                (json.dumps(metadata), project, name),
            )
            if cursor.rowcount != 1:
                raise QueueDoesNotExist(name)

        return self._run(work)

    def deleteQueue(self, project: str, name: str) -> Any:
        def work(c: sqlite3.Connection) -> None:
            _purge(c, project, name)
            c.execute(
                "DELETE FROM queues WHERE project = ? AND name = ?", (project, name)
            )

        return self._run(work)

    def purgeMessages(self, project: str, name: str) -> Any:
        return self._run(lambda c: _purge(c, project, name))

    def listQueues(
        self, project: str, marker: Optional[str], limit: int, detailed: bool
    ) -> Any:
        def work(c: sqlite3.Connection) -> list:
            rows = c.execute(
                "SELECT name, metadata FROM queues WHERE project = ? AND name > ? "
                "ORDER BY name LIMIT ?",
                (project, marker or "", limit),
            ).fetchall()
            return [
                models.QueueInfo(name, json.loads(meta) if detailed else None)
                for name, meta in rows
            ]

        return self._run(work)

    def countQueues(self, project: str) -> Any:
        return self._run(
            lambda c: c.execute(
                "SELECT COUNT(*) FROM queues WHERE project = ?", (project,)
            ).fetchone()[0]
        )

    def queueStats(self, project: str, name: str, now: float) -> Any:
        return self._run(_queueStats, project, name, now)

    def postMessages(
        self,
        project: str,
        queue: str,
        messages: Sequence[models.NewMessage],
        clientId: str,
        now: float,
        *,
        durability: Optional[str] = None,
    ) -> Any:
        return self._run(
            _Post(project, queue, tuple(messages), clientId, now),
            durability=durability,
        )

    def listMessages(
        self, project: str, queue: str, query: models.MessageQuery, now: float
    ) -> Any:
        params: dict[str, Any] = {
            "project": project,
            "queue": queue,
            "now": now,
            "limit": query.limit,
        }
        sql = (
            f"SELECT {_COLUMNS} FROM messages "
            "WHERE project = :project AND queue = :queue AND expires > :now"
        )
        if query.marker is not None:
            sql += " AND marker > :marker"
            params["marker"] = query.marker
        if not query.echo:
            sql += " AND client_id != :client"
            params["client"] = query.clientId
        if not query.includeClaimed:
            sql += " AND (claim_id IS NULL OR claim_expires <= :now)"
        if not query.includeDelayed:
            sql += " AND visible_at <= :now"
        sql += _tagFilter(query.tags, params)
        sql += " ORDER BY marker LIMIT :limit"
        return self._run(lambda c: [_message(row) for row in c.execute(sql, params)])

    def getMessages(
        self, project: str, queue: str, ids: Sequence[str], now: float
    ) -> Any:
        ids = list(ids)
        if not ids:
            return self._run(lambda c: [])
        holes = ",".join("?" * len(ids))
        sql = (
            f"SELECT {_COLUMNS} FROM messages WHERE project = ? AND queue = ? "
            f"AND id IN ({holes}) AND expires > ? ORDER BY marker"
        )
        args = (project, queue, *ids, now)
        return self._run(lambda c: [_message(row) for row in c.execute(sql, args)])

    def deleteMessage(
        self,
        project: str,
        queue: str,
        messageId: str,
        claimId: Optional[str],
        now: float,
        *,
        durability: Optional[str] = None,
    ) -> Any:
        def work(c: sqlite3.Connection) -> None:
            row = c.execute(
                "SELECT seq, claim_id, claim_expires FROM messages "
                "WHERE project = ? AND queue = ? AND id = ? AND expires > ?",
                (project, queue, messageId, now),
            ).fetchone()
            if row is None:
                return
            seq, holder, holderExpires = row
            rules.checkDelete(messageId, holder, holderExpires, claimId, now)
            cursor = c.execute("DELETE FROM messages WHERE seq = ?", (seq,))
            _removed(c, project, queue, cursor.rowcount)

        return self._run(work, durability=durability)

    def deleteMessages(
        self,
        project: str,
        queue: str,
        ids: Sequence[str],
        claimIds: Optional[Sequence[str]],
        now: float,
        *,
        durability: Optional[str] = None,
    ) -> Any:
        ids = list(ids)
        holes = ",".join("?" * len(ids))
        sql = (
            f"DELETE FROM messages WHERE project = ? AND queue = ? AND id IN ({holes})"
        )
        args: list[Any] = [project, queue, *ids]
        if claimIds is not None:
            # marconi.core.rules.deletableWith
            claimIds = list(claimIds)
            claimHoles = ",".join("?" * len(claimIds)) or "NULL"
            sql += (
                " AND (claim_id IS NULL OR claim_expires <= ? "
                f"OR claim_id IN ({claimHoles}))"
            )
            args += [now, *claimIds]
        if not ids:
            return self._run(lambda c: 0)
        return self._run(
            lambda c: _removed(c, project, queue, c.execute(sql, args).rowcount),
            durability=durability,
        )

    def popMessages(
        self,
        project: str,
        queue: str,
        limit: int,
        tags: Sequence[str],
        now: float,
        *,
        durability: Optional[str] = None,
    ) -> Any:
        def work(c: sqlite3.Connection) -> list:
            messages = self._claimable(c, project, queue, limit, tags, now)
            cursor = c.executemany(
                "DELETE FROM messages WHERE project = ? AND queue = ? AND marker = ?",
                [(project, queue, m.marker) for m in messages],
            )
            _removed(c, project, queue, cursor.rowcount)
            return messages

        return self._run(work, durability=durability)

    def _claimable(
        self,
        c: sqlite3.Connection,
        project: str,
        queue: str,
        limit: int,
        tags: Sequence[str],
        now: float,
    ) -> list:
        """
        The oldest claimable messages carrying every tag, up to C{limit}
        (L{rules.isClaimable}), in the caller's transaction.

        The rows whose claim ended are unclaimed first (nothing reads an
        ended claim's id: L{rules.checkDelete} and L{rules.deletableWith}
        treat it as no claim), so every claimable row is on
        messages_unclaimed and the read never passes a row a live claim
        holds: its cost grows with the delayed and expired rows it skips,
        not with the queue's claimed ones.
        """
        params: dict[str, Any] = {
            "project": project,
            "queue": queue,
            "now": now,
            "limit": limit,
        }
        c.execute(_UNCLAIM_ENDED, params)
        sql = (
            _CLAIMABLE_SELECT
            + _tagFilter(tags, params)
            + " ORDER BY marker LIMIT :limit"
        )
        return [_message(row) for row in c.execute(sql, params)]

    def createClaim(
        self,
        project: str,
        queue: str,
        spec: ClaimSpec,
        now: float,
        *,
        durability: Optional[str] = None,
    ) -> Any:
        deadLetters = spec.maxClaimCount is not None and spec.deadLetterQueue
        if not deadLetters:
            # rules.goesToDeadLetter holds for no message: every claimable
            # row is claimed, with one read and one update.
            return self._run(
                _claimRows, project, queue, spec, now, durability=durability
            )
        moved: list = []

        def work(c: sqlite3.Connection) -> Optional[Claim]:
            candidates = self._claimable(c, project, queue, spec.limit, spec.tags, now)
            claimable = []
            for message in candidates:
                if rules.goesToDeadLetter(message.claimCount, spec):
                    self._deadLetter(c, project, queue, message, spec, now)
                    moved.append(message.id)
                else:
                    claimable.append(message)
            if not claimable:
                return None
            claimId = _claimId(now)
            claimExpires = now + spec.ttl
            held = [
                rules.claimed(m, claimId, claimExpires, spec.grace) for m in claimable
            ]
            c.executemany(
                "UPDATE messages SET claim_id = ?, claim_expires = ?, "
                "claim_count = ?, expires = ? "
                "WHERE project = ? AND queue = ? AND marker = ?",
                [
                    (claimId, claimExpires, m.claimCount, m.expires)
                    + (project, queue, m.marker)
                    for m in held
                ],
            )
            return _recordClaim(c, project, queue, claimId, spec, now, held)

        def committed(claim: Optional[Claim]) -> Optional[Claim]:
            self._report("dead_lettered", len(moved), project, queue)
            return claim

        return self._run(work, durability=durability).addCallback(committed)

    # IQueueDepths.

    def sampleDepths(self, now: float, limit: int) -> Any:
        def work(c: sqlite3.Connection) -> list:
            rows = c.execute(
                "SELECT project, queue, COUNT(*), "
                "SUM(claim_id IS NOT NULL AND claim_expires > :now) "
                "FROM messages WHERE expires > :now GROUP BY project, queue "
                "ORDER BY COUNT(*) DESC, project, queue LIMIT :limit",
                {"now": now, "limit": limit},
            )
            return [
                models.QueueDepth(p, q, n, claimed or 0) for p, q, n, claimed in rows
            ]

        return self._run(work)

    def _deadLetter(
        self,
        c: sqlite3.Connection,
        project: str,
        queue: str,
        message: Message,
        spec: ClaimSpec,
        now: float,
    ) -> None:
        """
        Move a message to the dead letter queue, at its end, unclaimed.
        """
        assert spec.deadLetterQueue is not None
        target = spec.deadLetterQueue
        ttl = rules.deadLetterTTL(message.ttl, spec)
        c.execute(
            "INSERT OR IGNORE INTO queues (project, name, metadata, created) "
            "VALUES (?, ?, '{}', ?)",
            (project, target, now),
        )
        cursor = c.execute(
            "DELETE FROM messages WHERE project = ? AND queue = ? AND marker = ?",
            (project, queue, message.marker),
        )
        _removed(c, project, queue, cursor.rowcount)
        times = (message.created, now + ttl, now)
        counts = (message.claimCount, message.checksum)
        fields = (message.body, ttl, *times, message.clientId, *counts)
        marker = _takeMarkers(c, project, target, 1)
        _insertMessage(c, project, target, marker, message.id, fields, message.tags)
        _count(c, project, target, 1)

    def getClaim(self, project: str, queue: str, claimId: str, now: float) -> Any:
        def work(c: sqlite3.Connection) -> Claim:
            row = c.execute(
                "SELECT ttl, grace, updated, expires FROM claims "
                "WHERE project = ? AND queue = ? AND id = ? AND expires > ?",
                (project, queue, claimId, now),
            ).fetchone()
            if row is None:
                raise ClaimDoesNotExist(claimId)
            rows = c.execute(
                # By claim id, then sorted: in marker order the planner
                # would walk the whole queue to find a claim's few rows.
                f"SELECT {_COLUMNS} FROM messages INDEXED BY messages_by_claim "
                "WHERE project = ? AND queue = ? "
                "AND claim_id = ? AND claim_expires > ? AND expires > ? "
                "ORDER BY marker",
                (project, queue, claimId, now, now),
            )
            return Claim(
                id=claimId,
                ttl=row[0],
                grace=row[1],
                updated=row[2],
                expires=row[3],
                messages=[_message(r) for r in rows],
            )

        return self._run(work)

    def renewClaim(
        self,
        project: str,
        queue: str,
        claimId: str,
        ttl: int,
        grace: int,
        now: float,
    ) -> Any:
        def work(c: sqlite3.Connection) -> None:
            expires = now + ttl
            cursor = c.execute(
                "UPDATE claims SET ttl = ?, grace = ?, updated = ?, expires = ? "
                "WHERE project = ? AND queue = ? AND id = ? AND expires > ?",
                (ttl, grace, now, expires, project, queue, claimId, now),
            )
            if cursor.rowcount != 1:
                raise ClaimDoesNotExist(claimId)
            c.execute(
                # By claim id: messages_claimed would walk the queue's
                # claimed rows.
                "UPDATE messages INDEXED BY messages_by_claim "
                "SET claim_expires = ?, expires = MAX(expires, ?) "
                "WHERE project = ? AND queue = ? AND claim_id = ? AND expires > ?",
                (expires, expires + grace, project, queue, claimId, now),
            )

        return self._run(work)

    def releaseClaim(self, project: str, queue: str, claimId: str, now: float) -> Any:
        def work(c: sqlite3.Connection) -> None:
            key = (project, queue, claimId)
            c.execute(
                "DELETE FROM claims WHERE project = ? AND queue = ? AND id = ?", key
            )
            c.execute(
                "UPDATE messages INDEXED BY messages_by_claim "
                "SET claim_id = NULL, claim_expires = NULL "
                "WHERE project = ? AND queue = ? AND claim_id = ?",
                key,
            )

        return self._run(work)

    def purgeExpired(self, now: float) -> Any:
        def work(c: sqlite3.Connection) -> tuple[int, list]:
            # The queues losing messages, with what each loses: a river
            # record counts as the events it holds (its body is read only
            # for river records).  One read names the rows, so the counts
            # describe exactly the rows deleted.
            rows = c.execute(
                "SELECT seq, project, queue, CASE WHEN queue = ? THEN body END "
                "FROM messages WHERE expires <= ? LIMIT ?",
                (RIVER, now, _PURGE_BATCH),
            ).fetchall()
            c.executemany(
                "DELETE FROM messages WHERE seq = ?", [(row[0],) for row in rows]
            )
            _countEach(c, _expiredRows(rows))
            counts: dict = {}
            for _, project, queue, record in rows:
                events = 1 if record is None else recordEvents(record)
                counts[project, queue] = counts.get((project, queue), 0) + events
            removed = len(rows)
            perQueue = [(p, q, n) for (p, q), n in counts.items()]
            c.execute("DELETE FROM claims WHERE expires <= ?", (now,))
            return removed, perQueue

        async def purge() -> int:
            total = 0
            while True:
                removed, perQueue = await self._run(work)
                for project, queue, count in perQueue:
                    self._reportQueue("expired", project, queue, count)
                    total += count
                if removed < _PURGE_BATCH:
                    return total

        return Deferred.fromCoroutine(purge())

    # Handing queues over (marconi.cluster.rebalance).

    def heldQueues(self, after: Optional[tuple], limit: int) -> Any:
        return self._run(_heldQueues, tuple(after or ("", "")), after is None, limit)

    def exportQueue(
        self, project: str, name: str, after: Optional[int], limit: int
    ) -> Any:
        return self._run(_exportQueue, project, name, after, limit)

    def importQueue(self, project: str, name: str, page: dict, first: bool) -> Any:
        return self._run(_importQueue, project, name, page, first)

    def dropQueue(self, project: str, name: str) -> Any:
        return self.deleteQueue(project, name)


def _expiredRows(rows: list) -> dict:
    """
    How each queue's stored count changes when the expired rows C{rows}
    (seq, project, queue, ...) are deleted.
    """
    changes: dict = {}
    for _, project, queue, *_ in rows:
        changes[project, queue] = changes.get((project, queue), 0) - 1
    return changes


def _heldQueues(c: sqlite3.Connection, after: tuple, start: bool, limit: int) -> list:
    comparison = ">=" if start else ">"
    rows = c.execute(
        "SELECT project, name FROM (SELECT project, name FROM queues UNION "
        "SELECT DISTINCT project, queue FROM messages) "
        f"WHERE (project, name) {comparison} (?, ?) ORDER BY project, name LIMIT ?",
        (*after, max(limit, 0)),
    ).fetchall()
    return [tuple(row) for row in rows]


def _exportQueue(
    c: sqlite3.Connection, project: str, name: str, after: Optional[int], limit: int
) -> Optional[dict]:
    key = (project, name)
    row = c.execute(
        "SELECT metadata, created FROM queues WHERE project = ? AND name = ?", key
    ).fetchone()
    rows = c.execute(
        f"SELECT {_COLUMNS} FROM messages WHERE project = ? AND queue = ? "
        "AND marker > ? ORDER BY marker LIMIT ?",
        (*key, -1 if after is None else after, max(limit, 0) + 1),
    ).fetchall()
    if row is None and not rows and after is None:
        return None
    last = c.execute(
        "SELECT last FROM markers WHERE project = ? AND queue = ?", key
    ).fetchone()
    claims = []
    if after is None:
        claims = [
            transfer.claimDoc(*claim)
            for claim in c.execute(
                "SELECT id, ttl, grace, updated, expires FROM claims "
                "WHERE project = ? AND queue = ? ORDER BY id",
                key,
            )
        ]
    messages = [transfer.messageDoc(_message(r)) for r in rows]
    return transfer.page(
        None if row is None else json.loads(row[0]),
        None if row is None else row[1],
        0 if last is None else last[0],
        claims,
        messages,
        limit,
    )


def _importQueue(
    c: sqlite3.Connection, project: str, name: str, page: dict, first: bool
) -> None:
    key = (project, name)
    if first:
        _purge(c, project, name)
        c.execute("DELETE FROM queues WHERE project = ? AND name = ?", key)
        if page["metadata"] is not None:
            c.execute(
                "INSERT INTO queues (project, name, metadata, created) "
                "VALUES (?, ?, ?, ?)",
                (*key, json.dumps(page["metadata"]), page["created"]),
            )
        c.execute(
            "INSERT INTO markers (project, queue, last) VALUES (?, ?, ?) "
            "ON CONFLICT (project, queue) DO UPDATE SET "
            "last = MAX(last, excluded.last)",
            (*key, int(page["last"])),
        )
        c.executemany(
            "INSERT INTO claims (project, queue, id, ttl, grace, updated, expires) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (*key, cl["id"], cl["ttl"], cl["grace"], cl["updated"], cl["expires"])
                for cl in page["claims"]
            ],
        )
    change = 0
    for doc in page["messages"]:
        replaced = c.execute(
            "DELETE FROM messages WHERE project = ? AND queue = ? "
            "AND (id = ? OR marker = ?)",
            (*key, doc["id"], doc["marker"]),
        )
        change += 1 - replaced.rowcount
        m = transfer.messageOf(doc)
        cursor = c.execute(
            f"INSERT INTO messages (project, queue, {_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                *key,
                m.id,
                m.marker,
                m.body,
                m.ttl,
                m.created,
                m.expires,
                m.visibleAt,
                m.clientId,
                m.claimId,
                m.claimExpires,
                m.claimCount,
                json.dumps(list(m.tags)) if m.tags else None,
                m.checksum,
            ),
        )
        if m.tags:
            c.executemany(
                "INSERT INTO message_tags (seq, tag) VALUES (?, ?)",
                [(cursor.lastrowid, tag) for tag in m.tags],
            )
    _count(c, project, name, change)


# Reads the oldest claimable rows for a claim (_CLAIMABLE_SELECT, with a
# tag filter and a limit), with each row's own key last; _claimRows then
# takes them with one UPDATE naming those keys.  A read and an update cost
# less than one UPDATE ... RETURNING, which keeps the rows it returns in a
# table of its own until it ends.
_CLAIM_READ = _CLAIMABLE_SELECT.replace(_COLUMNS, _COLUMNS + ", seq", 1)

# Takes the rows read by _CLAIM_READ, named by their keys (the holes are
# added for each claim).  The messages' expiry is left alone here: naming
# it would rewrite every claimed row's entry in messages_by_expiry.
_CLAIM_TAKE = (
    "UPDATE messages SET claim_id = ?, claim_expires = ?, "
    "claim_count = claim_count + 1 WHERE seq IN "
)


def _claimId(now: float) -> str:
    """
    A new claim id, made as message ids are (L{_messageIds}): claims made
    one after the other have neighbouring ids, so their rows in the claims
    table and in messages_by_claim go to the same few pages instead of a
    new page each.
    """
    return _messageIds(now, 1)[0]


def _claimRows(
    c: sqlite3.Connection, project: str, queue: str, spec: ClaimSpec, now: float
) -> Optional[Claim]:
    """
    Claim the oldest claimable messages of a queue for C{spec}, none of
    which goes to a dead letter queue (L{rules.claimed} for each), in the
    caller's transaction.

    @return: the claim, or L{None} when nothing was claimable.
    """
    claimId = _claimId(now)
    claimExpires = now + spec.ttl
    params: dict[str, Any] = {
        "project": project,
        "queue": queue,
        "now": now,
        "limit": spec.limit,
    }
    c.execute(_UNCLAIM_ENDED, params)
    sql = _CLAIM_READ + _tagFilter(spec.tags, params) + " ORDER BY marker LIMIT :limit"
    rows = c.execute(sql, params).fetchall()
    if not rows:
        return None
    seqs = [row[13] for row in rows]
    c.execute(
        _CLAIM_TAKE + f"({','.join('?' * len(seqs))})", (claimId, claimExpires, *seqs)
    )
    # A message lives at least the claim's grace beyond the claim.
    least = claimExpires + spec.grace
    short = [row[13] for row in rows if row[5] < least]
    if short:
        c.execute(
            "UPDATE messages SET expires = ? "
            f"WHERE seq IN ({','.join('?' * len(short))})",
            (least, *short),
        )
    # Each message as rules.claimed makes it.
    messages = [
        makeMessage(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5] if row[5] >= least else least,
            row[6],
            row[7],
            claimId,
            claimExpires,
            row[10] + 1,
            tuple(json.loads(row[11])) if row[11] else (),
            row[12],
        )
        for row in rows
    ]
    return _recordClaim(c, project, queue, claimId, spec, now, messages)


def _recordClaim(
    c: sqlite3.Connection,
    project: str,
    queue: str,
    claimId: str,
    spec: ClaimSpec,
    now: float,
    messages: list,
) -> Claim:
    """
    Store the claim C{claimId} made at C{now} for C{spec}, holding
    C{messages}, in the caller's transaction.
    """
    expires = now + spec.ttl
    c.execute(
        "INSERT INTO claims (project, queue, id, ttl, grace, updated, expires) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (project, queue, claimId, spec.ttl, spec.grace, now, expires),
    )
    return Claim(
        id=claimId,
        ttl=spec.ttl,
        grace=spec.grace,
        updated=now,
        expires=expires,
        messages=messages,
    )


def _purge(c: sqlite3.Connection, project: str, queue: str) -> int:
    """
    Remove the queue's messages and claims, in the caller's transaction.

    @return: the number of messages removed.
    """
    key = (project, queue)
    removed = c.execute(
        "DELETE FROM messages WHERE project = ? AND queue = ?", key
    ).rowcount
    _removed(c, project, queue, removed)
    c.execute("DELETE FROM claims WHERE project = ? AND queue = ?", key)
    return removed


def _queueStats(
    c: sqlite3.Connection, project: str, queue: str, now: float
) -> models.QueueStats:
    """
    A queue's stats from its stored count, less what has expired, with the
    claimed rows counted through the queue's claims and the delayed rows in
    their own index: the cost grows with the rows expired but not purged
    yet (of every queue) and with the queue's claims, claimed and delayed
    rows, never with its free ones.
    """
    params = {"project": project, "queue": queue, "now": now}
    mine = "project = :project AND queue = :queue"
    row = c.execute(f"SELECT stored FROM queue_counts WHERE {mine}", params).fetchone()
    if not row or not row[0]:
        return models.QueueStats(free=0, claimed=0, delayed=0)
    (expired,) = c.execute(
        "SELECT COUNT(*) FROM messages INDEXED BY messages_by_expiry "
        f"WHERE expires <= :now AND {mine}",
        params,
    ).fetchone()
    total = row[0] - expired
    if not total:
        return models.QueueStats(free=0, claimed=0, delayed=0)
    (claimed,) = c.execute(
        "SELECT COUNT(*) FROM claims JOIN messages INDEXED BY messages_by_claim "
        "ON messages.claim_id = claims.id "
        "WHERE claims.project = :project AND claims.queue = :queue "
        "AND claims.expires > :now AND messages.project = :project "
        "AND messages.queue = :queue AND messages.claim_expires > :now "
        "AND messages.expires > :now",
        params,
    ).fetchone()
    (delayed,) = c.execute(
        "SELECT COUNT(*) FROM messages INDEXED BY messages_delayed "
        f"WHERE {mine} AND visible_at > created AND visible_at > :now "
        "AND expires > :now AND (claim_id IS NULL OR claim_expires <= :now)",
        params,
    ).fetchone()
    live = f"{mine} AND expires > :now"
    oldest = c.execute(
        f"SELECT {_COLUMNS} FROM messages WHERE {live} ORDER BY marker LIMIT 1",
        params,
    ).fetchone()
    newest = c.execute(
        f"SELECT {_COLUMNS} FROM messages WHERE {live} ORDER BY marker DESC LIMIT 1",
        params,
    ).fetchone()
    return models.QueueStats(
        free=total - claimed - delayed,
        claimed=claimed,
        delayed=delayed,
        oldest=_message(oldest),
        newest=_message(newest),
    )
