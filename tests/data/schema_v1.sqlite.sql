-- The tickrun schema version 1 on SQLite, as `tickrun init` of tickrun 0.1.0 created it
-- (before task and run ids were AUTOINCREMENT); tests upgrade it in place.
CREATE TABLE tickrun_meta (
	name VARCHAR(64) NOT NULL, 
	value VARCHAR(255) NOT NULL, 
	PRIMARY KEY (name)
);
CREATE TABLE tickrun_tasks (
	id INTEGER NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	queue VARCHAR(100) NOT NULL, 
	priority INTEGER NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	payload TEXT NOT NULL, 
	"key" VARCHAR(255), 
	run_at DATETIME NOT NULL, 
	claimable_at DATETIME, 
	claim_priority INTEGER GENERATED ALWAYS AS (CASE WHEN claimable_at IS NULL THEN NULL ELSE priority END) STORED, 
	attempts INTEGER NOT NULL, 
	max_attempts INTEGER NOT NULL, 
	lease_until DATETIME, 
	claim_token VARCHAR(32), 
	worker VARCHAR(255), 
	started_at DATETIME, 
	created_at DATETIME NOT NULL, 
	finished_at DATETIME, 
	last_error TEXT, 
	last_traceback TEXT, 
	schedule VARCHAR(200), 
	scheduled_for DATETIME, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_tickrun_tasks_key UNIQUE ("key")
);
CREATE INDEX ix_tickrun_tasks_status_finished ON tickrun_tasks (status, finished_at);
CREATE INDEX ix_tickrun_tasks_claim ON tickrun_tasks (priority DESC, claimable_at, id) WHERE claimable_at IS NOT NULL;
CREATE INDEX ix_tickrun_tasks_schedule ON tickrun_tasks (schedule, status);
CREATE TABLE tickrun_attempts (
	id INTEGER NOT NULL, 
	task_id BIGINT NOT NULL, 
	attempt INTEGER NOT NULL, 
	started_at DATETIME, 
	finished_at DATETIME NOT NULL, 
	worker VARCHAR(255), 
	outcome VARCHAR(16) NOT NULL, 
	error TEXT, 
	traceback TEXT, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_tickrun_attempts_finished ON tickrun_attempts (finished_at);
CREATE INDEX ix_tickrun_attempts_task ON tickrun_attempts (task_id, attempt);
CREATE TABLE tickrun_runs (
	id INTEGER NOT NULL, 
	started_at DATETIME NOT NULL, 
	finished_at DATETIME, 
	host VARCHAR(255) NOT NULL, 
	worker VARCHAR(255) NOT NULL, 
	pid INTEGER NOT NULL, 
	claimed INTEGER NOT NULL, 
	succeeded INTEGER NOT NULL, 
	retried INTEGER NOT NULL, 
	dead INTEGER NOT NULL, 
	exit_code INTEGER, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_tickrun_runs_started ON tickrun_runs (started_at);
CREATE TABLE tickrun_schedules (
	name VARCHAR(200) NOT NULL, 
	task VARCHAR(200) NOT NULL, 
	cron VARCHAR(200) NOT NULL, 
	tz VARCHAR(64) NOT NULL, 
	last_fire_at DATETIME NOT NULL, 
	last_enqueued_at DATETIME, 
	last_success_at DATETIME, 
	missed BIGINT NOT NULL, 
	skipped BIGINT NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (name)
);
INSERT INTO tickrun_meta (name, value) VALUES ('schema_version', '1');
