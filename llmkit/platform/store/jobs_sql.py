"""The job statements both stores run, and rows to Job dataclasses.

A job is a unit of background work of one tenant (indexing a document, issue 16): `queued` until a worker
claims it, `running` while a worker holds its lease, then `completed`, or `failed` once its attempts are
spent (or `queued` again, later, to retry). A worker that dies leaves its job `running` with a lease that
runs out: the next claim takes it again (attempts permitting), so a job survives a restart, and two
workers never hold one job at once (the claim is one UPDATE; PostgreSQL's skips rows another claim locked).
Parameters are written `$1, $2, ...` as in `migrations.py`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from llmkit.platform.store.base import Job

JOB_STATES = ("queued", "running", "completed", "failed")
# What a job that ran out of attempts while its worker was gone says.
LEASE_LOST = "its worker stopped while running it (lease expired) and no attempts are left"

_COLUMNS = (
    "id, tenant_id, kind, subject, payload, state, attempts, max_attempts, run_at, lease_until, worker, "
    "error, created_at, started_at, finished_at"
)
INSERT_JOB = f"""INSERT INTO jobs ({_COLUMNS})
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"""
SELECT_JOB = f"SELECT {_COLUMNS} FROM jobs WHERE id = $1"
SELECT_TENANT_JOB = f"SELECT {_COLUMNS} FROM jobs WHERE id = $1 AND tenant_id = $2"
# Due: queued and its time has come, or running with a lease that ran out and an attempt left.
_DUE = """(state = 'queued' AND run_at <= $1)
        OR (state = 'running' AND lease_until < $1 AND attempts < max_attempts)"""
# A read first, so an idle runner's polls never take the write lock: any job to claim or to expire?
ANY_DUE = """SELECT 1 FROM jobs WHERE (state = 'queued' AND run_at <= $1)
    OR (state = 'running' AND lease_until < $1) LIMIT 1"""
_CLAIM = f"""UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_until = $2, worker = $3,
        started_at = $1
    WHERE id = (SELECT id FROM jobs WHERE {_DUE} ORDER BY run_at, created_at, id LIMIT 1{{lock}})
    RETURNING {_COLUMNS}"""
CLAIM_JOB_SQLITE = _CLAIM.format(lock="")
CLAIM_JOB_POSTGRES = _CLAIM.format(lock=" FOR UPDATE SKIP LOCKED")
# Running jobs whose worker is gone and whose attempts are spent fail, with the reason ($2).
EXPIRE_JOBS = """UPDATE jobs SET state = 'failed', finished_at = $1, lease_until = NULL, error = $2
    WHERE state = 'running' AND lease_until < $1 AND attempts >= max_attempts"""
# The holder's calls only: a worker whose lease ran out and was taken over changes nothing.
EXTEND_JOB = "UPDATE jobs SET lease_until = $3 WHERE id = $1 AND worker = $2 AND state = 'running'"
FINISH_JOB = """UPDATE jobs SET state = 'completed', finished_at = $3, lease_until = NULL, error = NULL
    WHERE id = $1 AND worker = $2 AND state = 'running'"""
RETRY_LATER = """UPDATE jobs SET state = 'queued', run_at = $3, lease_until = NULL, error = $4
    WHERE id = $1 AND worker = $2 AND state = 'running'"""
FAIL_JOB = """UPDATE jobs SET state = 'failed', finished_at = $3, lease_until = NULL, error = $4
    WHERE id = $1 AND worker = $2 AND state = 'running'"""
# A failed job runs again with a fresh set of attempts (its last error kept until it next runs).
REQUEUE_JOB = """UPDATE jobs SET state = 'queued', run_at = $2, attempts = 0, finished_at = NULL
    WHERE id = $1 AND state = 'failed'"""
REQUEUE_TENANT_JOB = """UPDATE jobs SET state = 'queued', run_at = $2, attempts = 0, finished_at = NULL
    WHERE id = $1 AND state = 'failed' AND tenant_id = $3"""
DELETE_TENANT_JOBS = "DELETE FROM jobs WHERE tenant_id = $1"


def latest_statement(subjects: int) -> str:
    """The latest job of one kind ($2) of a tenant ($1) on each of `subjects` subjects ($3...)."""
    marks = ", ".join(f"${n}" for n in range(3, 3 + subjects))
    columns = ", ".join(f"j.{c}" for c in _COLUMNS.split(", "))
    return f"""SELECT {columns} FROM jobs j
    WHERE j.tenant_id = $1 AND j.kind = $2 AND j.subject IN ({marks})
        AND NOT EXISTS (SELECT 1 FROM jobs n WHERE n.tenant_id = j.tenant_id AND n.subject = j.subject
            AND n.kind = j.kind
            AND (n.created_at > j.created_at OR (n.created_at = j.created_at AND n.id > j.id)))"""


def list_statement(state: str | None, tenant_id: str | None) -> tuple[str, int]:
    """Jobs newest first, optionally of one state and one tenant: the statement and the number of its
    filter parameters ($1.. the filters, then limit, offset)."""
    where, n = [], 0
    if state is not None:
        n += 1
        where.append(f"state = ${n}")
    if tenant_id is not None:
        n += 1
        where.append(f"tenant_id = ${n}")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    order = f"ORDER BY created_at DESC, id DESC LIMIT ${n + 1} OFFSET ${n + 2}"
    return f"SELECT {_COLUMNS} FROM jobs{clause} {order}", n


def job_row(job: Job) -> tuple[Any, ...]:
    """A job as INSERT_JOB's parameters (payload as JSON text)."""
    return (
        job.id,
        job.tenant_id,
        job.kind,
        job.subject,
        json.dumps(dict(job.payload), ensure_ascii=False),
        job.state,
        job.attempts,
        job.max_attempts,
        job.run_at,
        job.lease_until,
        job.worker,
        job.error,
        job.created_at,
        job.started_at,
        job.finished_at,
    )


def job_of(row: Sequence[Any]) -> Job:
    """A row of _COLUMNS as a Job."""
    return Job(
        id=row[0],
        tenant_id=row[1],
        kind=row[2],
        subject=row[3],
        payload=json.loads(row[4]),
        state=row[5],
        attempts=int(row[6]),
        max_attempts=int(row[7]),
        run_at=float(row[8]),
        lease_until=None if row[9] is None else float(row[9]),
        worker=row[10],
        error=row[11],
        created_at=float(row[12]),
        started_at=None if row[13] is None else float(row[13]),
        finished_at=None if row[14] is None else float(row[14]),
    )


def latest_of(rows: Sequence[Sequence[Any]]) -> dict[str, Job]:
    """latest_statement's rows by subject."""
    return {row[3]: job_of(row) for row in rows}


# Finished jobs (completed or failed) before $1 that no longer tell anything: another job on the same
# subject came after them, or (indexing) their document is gone; at most $2 at a time. A document's
# newest job, which is its indexing state, is kept however old.
PRUNE_JOBS = """DELETE FROM jobs WHERE id IN (
    SELECT j.id FROM jobs j
    WHERE j.state IN ('completed', 'failed') AND j.finished_at < $1
        AND (EXISTS (SELECT 1 FROM jobs n WHERE n.tenant_id = j.tenant_id AND n.subject = j.subject
                AND n.kind = j.kind
                AND (n.created_at > j.created_at OR (n.created_at = j.created_at AND n.id > j.id)))
            OR (j.kind = 'index_document' AND NOT EXISTS (
                SELECT 1 FROM documents d WHERE d.tenant_id = j.tenant_id AND d.id = j.subject)))
    LIMIT $2)"""
