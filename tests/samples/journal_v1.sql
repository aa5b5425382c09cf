-- A task journal as sora_async's first schema (version 1) wrote it: the migration test's input.
PRAGMA user_version = 1;
BEGIN TRANSACTION;
CREATE TABLE changes (
            task_id TEXT NOT NULL,
            at REAL NOT NULL,
            status TEXT NOT NULL,
            progress TEXT NOT NULL,
            percent REAL
        );
INSERT INTO "changes" VALUES('task_01v1',1795900001.5,'QUEUED','0%',0.0);
INSERT INTO "changes" VALUES('task_01v1',1795900030.0,'IN_PROGRESS','50%',50.0);
INSERT INTO "changes" VALUES('task_01v1',1795900090.0,'SUCCESS','100%',100.0);
CREATE TABLE creates (
            ref TEXT PRIMARY KEY,
            format TEXT NOT NULL,
            prompt TEXT NOT NULL,
            options TEXT NOT NULL,
            sent_at REAL NOT NULL,
            owner TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('sending', 'created', 'refused', 'in_doubt')),
            task_id TEXT,
            error TEXT NOT NULL DEFAULT '',
            answered_at REAL
        );
INSERT INTO "creates" VALUES('0123456789abcdef0123456789abcdef','openai','a kite from v1','{"model": "sora-2", "seconds": "4"}',1795900000.0,'builder:4242:1','created','task_01v1','',1795900001.5);
CREATE TABLE downloads (
            task_id TEXT NOT NULL,
            variant TEXT NOT NULL,
            path TEXT NOT NULL,
            size INTEGER,
            state TEXT NOT NULL CHECK (state IN ('claimed', 'done')),
            owner TEXT NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (task_id, variant)
        );
INSERT INTO "downloads" VALUES('task_01v1','video','/videos/task_01v1_source.mp4',2539,'done','builder:4242:1',1795900100.0);
CREATE TABLE tasks (
            task_id TEXT PRIMARY KEY,
            format TEXT NOT NULL,
            status TEXT NOT NULL,
            progress TEXT NOT NULL DEFAULT '',
            percent REAL,
            fail_reason TEXT NOT NULL DEFAULT '',
            final INTEGER NOT NULL DEFAULT 0,
            first_seen REAL NOT NULL,
            updated_at REAL NOT NULL
        );
INSERT INTO "tasks" VALUES('task_01v1','openai','SUCCESS','100%',100.0,'',1,1795900001.5,1795900090.0);
CREATE INDEX creates_task ON creates (task_id);
CREATE INDEX tasks_final ON tasks (final, first_seen);
CREATE INDEX changes_task ON changes (task_id);
COMMIT;
