"""The database schema, as numbered migrations (``PRAGMA user_version`` is the last one applied).

A migration is a SQL script, run in one transaction when a store opens a database of an older
version; a database of a newer version is refused. Never edit a released migration: add one.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        task TEXT NOT NULL,
        plan_file TEXT,
        model TEXT,
        workspace TEXT NOT NULL,
        status TEXT NOT NULL,
        stop_reason TEXT,
        stop_detail TEXT NOT NULL DEFAULT '',
        steps INTEGER NOT NULL DEFAULT 0,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        report TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        finished_at REAL
    );
    CREATE INDEX runs_created ON runs(created_at);
    CREATE TABLE steps (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        revision INTEGER NOT NULL,
        position INTEGER NOT NULL,
        step_id TEXT NOT NULL,
        tool TEXT NOT NULL,
        args TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        verdict TEXT,
        PRIMARY KEY (run_id, revision, position)
    ) WITHOUT ROWID;
    -- events and checkpoints carry kilobytes of JSON: rowid tables with a separate key index
    -- keep their B-trees small (WITHOUT ROWID suits only small rows)
    CREATE TABLE events (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        node TEXT,
        data TEXT NOT NULL,
        UNIQUE (run_id, seq)
    );
    CREATE TABLE checkpoints (
        run_id TEXT NOT NULL,
        step INTEGER NOT NULL,
        next_node TEXT,
        created_at REAL NOT NULL,
        state TEXT NOT NULL,
        UNIQUE (run_id, step)
    );
    CREATE TABLE lessons (
        id INTEGER PRIMARY KEY,
        run_id TEXT,
        task TEXT NOT NULL,
        outcome TEXT NOT NULL,
        text TEXT NOT NULL,
        tags TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE VIRTUAL TABLE lessons_fts USING fts5(
        task, text, tags, content='lessons', content_rowid='id'
    );
    CREATE TRIGGER lessons_ai AFTER INSERT ON lessons BEGIN
        INSERT INTO lessons_fts(rowid, task, text, tags)
        VALUES (new.id, new.task, new.text, new.tags);
    END;
    CREATE TRIGGER lessons_ad AFTER DELETE ON lessons BEGIN
        INSERT INTO lessons_fts(lessons_fts, rowid, task, text, tags)
        VALUES ('delete', old.id, old.task, old.text, old.tags);
    END;
    """,
    # 2: the permission audit log and people's approvals
    """
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL,
        step_id TEXT,
        tool TEXT NOT NULL,
        args TEXT NOT NULL,
        decision TEXT NOT NULL,  -- allow | ask | deny (actor 'policy'); approve | deny (a person)
        rule INTEGER,            -- the deciding rule's number (from 1); NULL: the default
        reason TEXT NOT NULL DEFAULT '',
        actor TEXT NOT NULL,
        ts REAL NOT NULL
    );
    CREATE INDEX audit_run ON audit(run_id, id);
    CREATE TABLE approvals (
        run_id TEXT NOT NULL,
        revision INTEGER NOT NULL,  -- plan revision: a replanned step may reuse an id
        step_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        decision TEXT NOT NULL,     -- approve | deny
        actor TEXT NOT NULL,
        ts REAL NOT NULL,
        note TEXT,
        PRIMARY KEY (run_id, revision, step_id, attempt)
    ) WITHOUT ROWID;
    """,
    # 3: cancel requests from another process (``trinity runs cancel``)
    """
    ALTER TABLE runs ADD COLUMN cancel_requested_at REAL;
    ALTER TABLE runs ADD COLUMN cancel_grace_s REAL;
    """,
    # 4: runs as an append-only journal (issue 8). The events table is the journal (``checkpoint``
    # events carry each graph step's state changes); snapshots replace the checkpoints table,
    # which stored the whole state again at every step; a lease (owner, expiry, epoch) makes one
    # process at a time the executor of a run, and triggers refuse journal writes from an older
    # epoch (a process that lost the lease). Each run keeps its latest snapshot: the one a
    # checkpoints table's newest row becomes here.
    """
    ALTER TABLE runs ADD COLUMN lease_owner TEXT;
    ALTER TABLE runs ADD COLUMN lease_expires_at REAL;
    ALTER TABLE runs ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE events ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE snapshots (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,      -- the state holds every journal entry up to this event seq
        epoch INTEGER NOT NULL,
        created_at REAL NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    INSERT INTO snapshots (run_id, seq, epoch, created_at, state)
        SELECT c.run_id,
               COALESCE((SELECT max(e.seq) FROM events e WHERE e.run_id = c.run_id), 0),
               0, c.created_at, c.state
        FROM checkpoints c
        WHERE c.step = (SELECT max(c2.step) FROM checkpoints c2 WHERE c2.run_id = c.run_id);
    DROP TABLE checkpoints;
    DROP TABLE steps;  -- each step's record is in the journal
    UPDATE runs SET status = 'cancelled' WHERE stop_reason = 'cancelled';
    CREATE TRIGGER events_fenced BEFORE INSERT ON events
    WHEN NEW.epoch != (SELECT lease_epoch FROM runs WHERE id = NEW.run_id)
    BEGIN SELECT RAISE(ABORT, 'trinity: lease lost'); END;
    CREATE TRIGGER snapshots_fenced BEFORE INSERT ON snapshots
    WHEN NEW.epoch != (SELECT lease_epoch FROM runs WHERE id = NEW.run_id)
    BEGIN SELECT RAISE(ABORT, 'trinity: lease lost'); END;
    """,
    # 5: the service (issue 11): a POST's Idempotency-Key kept with the run it started, and
    # API tokens (only a hash of each secret is kept)
    """
    ALTER TABLE runs ADD COLUMN idempotency_key TEXT;
    CREATE UNIQUE INDEX runs_idempotency ON runs(idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX runs_status ON runs(status, created_at);
    CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        hash TEXT NOT NULL,        -- sha256 of the secret, hex
        scopes TEXT NOT NULL,      -- comma-separated
        created_at REAL NOT NULL,
        expires_at REAL,
        revoked_at REAL,
        last_used_at REAL
    );
    """,
    # 6: observability (issue 12): what a run spent, kept with its row when it ends, and its
    # tool calls summed per tool, so `trinity report` reads columns, not events
    """
    ALTER TABLE runs ADD COLUMN llm_calls INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN llm_errors INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN llm_seconds REAL NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN cost_usd REAL NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN tool_calls INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN tool_errors INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN tool_seconds REAL NOT NULL DEFAULT 0;
    CREATE INDEX runs_finished ON runs(finished_at);
    CREATE TABLE run_tools (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        tool TEXT NOT NULL,
        calls INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        seconds REAL NOT NULL,
        max_seconds REAL NOT NULL,
        created_at REAL NOT NULL,  -- the run's (reports filter on it without a join)
        PRIMARY KEY (run_id, tool)
    ) WITHOUT ROWID;
    -- the report's scan: grouped by tool in index order, filtered on time, never the table
    CREATE INDEX run_tools_report
        ON run_tools(tool, created_at, calls, errors, seconds, max_seconds);
    CREATE TABLE alerts (
        name TEXT PRIMARY KEY,
        state TEXT NOT NULL,        -- ok | firing
        value REAL,
        summary TEXT NOT NULL DEFAULT '',
        since REAL NOT NULL,        -- when it entered this state
        notified_at REAL            -- the last notification sent (firing or resolved)
    );
    """,
    # 7: which runs have their spend on their row. Runs that ended before 6 have zeros there:
    # `trinity report` says how many, and `trinity report --backfill` reads them from their
    # journals. A row with any spend or tool row has it; so do runs that have not ended.
    """
    ALTER TABLE runs ADD COLUMN spend_recorded INTEGER NOT NULL DEFAULT 0;
    UPDATE runs SET spend_recorded = 1
        WHERE finished_at IS NULL OR llm_calls > 0 OR tool_calls > 0
           OR EXISTS (SELECT 1 FROM run_tools WHERE run_tools.run_id = runs.id);
    CREATE INDEX runs_spend_missing ON runs(created_at) WHERE spend_recorded = 0;
    """,
]

JOURNAL_VERSION = 4
"""The first schema version with the journal; opening an older database migrates to it and
then compacts the file (the dropped checkpoints may have taken most of it)."""
