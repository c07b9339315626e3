"""One evaluation, run by a worker of the training queue under a lease: plan, then for each model the held-out
loss, the multiple choices and the answers, each judged as soon as it is written; then the verdicts.

Everything is saved as it comes (answers in small batches, judgements every second), so a job stopped at any
point resumes with only what is missing: a saved answer is never asked again, a saved judgement never paid for
twice. Answers of the local backend are written on the worker's thread while the judge's calls run on the
process's teacher loop (generation.sdg.loop), so the judge works while the model writes.
"""

import asyncio
import logging
import time

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from evaluation.core.judge import judge_messages, parse_judgement
from evaluation.core.judging import KEY_REFUSED, JudgePool, key_refusal
from evaluation.core.local import LocalModel
from evaluation.models import EvaluationEvent, EvaluationJob, LeafResult, Measurement, Role
from evaluation.services import plan as planning
from evaluation.services.jobs import event, pending_measurements
from evaluation.services.results import results_compute
from generation.models import Teacher
from generation.sdg.loop import Bridge
from generation.sdg.teachers import OpenAITeacher, RetryPolicy, Sampling
from generation.services.teachers import local_model_source, teacher_client
from labweb import jobs
from labweb.errors import LabError

logger = logging.getLogger(__name__)
ANSWER_BATCH = 8
FLUSH_SECONDS = 1.0
JUDGE_DOWN_AFTER = 5  # failures in a row with no success between: the judge is down, stop asking it


WAITING = "waiting"
TRAINING_FIRST = (
    "waits for its training job, and for that job's earlier evaluations: on a machine without a GPU they would "
    "split its cores"
)


def _training_holds_these_cores(job: EvaluationJob) -> bool:
    """An evaluation of a training job's checkpoint, on a worker with no GPU, while that job still trains or an
    earlier evaluation of it still runs: the first run's case, where they would share two cores and the training
    would take several times as long. One at a time, in the order they were made, they finish as fast."""
    if job.backend != EvaluationJob.Backend.LOCAL or job.training_job_id is None:
        return False
    import torch

    if torch.cuda.is_available():
        return False
    from training.models import TrainingJob

    return (
        TrainingJob.objects.filter(pk=job.training_job_id, status__in=jobs.ACTIVE).exists()
        or EvaluationJob.objects.filter(
            training_job_id=job.training_job_id, pk__lt=job.pk, status__in=jobs.ACTIVE
        ).exists()
    )


class Stopped(Exception):
    """The job was cancelled, or another worker holds it now."""


def owner_identity() -> str:
    from training.services.nodes import worker_identity

    return worker_identity()


def evaluation_run(*, job_id: int) -> str:
    job = EvaluationJob.objects.get(pk=job_id)
    if job.status not in jobs.ACTIVE:
        return f"evaluation {job_id} is {job.status}"
    if job.status == jobs.Status.QUEUED and _training_holds_these_cores(job):
        # The task sends itself again to ask later: that message is this job's, so the reaper waits for it.
        EvaluationJob.objects.filter(pk=job.pk).update(stage=TRAINING_FIRST, sent_at=timezone.now(), resends=0)
        return WAITING
    owner = owner_identity()
    now = timezone.now()
    taken = EvaluationJob.objects.filter(
        Q(lease_until__isnull=True) | Q(lease_until__lt=now), pk=job.pk, status__in=jobs.ACTIVE
    ).update(lease_owner=owner, lease_until=jobs.lease_until(), attempts=F("attempts") + 1)
    if not taken:
        return f"evaluation {job_id} is held by another worker"
    job.lease_owner = owner
    jobs.transition(job, to=jobs.Status.RUNNING, allowed=[jobs.Status.QUEUED])
    # The heartbeat renews the lease between steps; inside one long step (loading a model, converting a GGUF
    # file) the process's lease keeper does.
    with jobs.lease_kept(EvaluationJob, job.pk, owner):
        return _run(job, owner)


def _run(job: EvaluationJob, owner: str) -> str:
    try:
        if not job.total:
            _stage(job, "planning")
            total = planning.plan_job(job)
            EvaluationJob.objects.filter(pk=job.pk).update(total=total)
            event(job, f"Planned {total} measurements on {len(job.leaves)} leaves.")
        bridge = Bridge()
        bridge.run(_Run(job, owner, bridge).drive())
        failed = job.measurements.exclude(error="")
        if failed.exists():
            first = failed.first()
            raise LabError(
                f"{failed.count()} judgements failed ({first.error}). What was measured is kept; resume once the "
                "judge answers.",
                field="judge",
            )
        _stage(job, "verdicts")
        counts = results_compute(job)
        _release(job, owner)
        jobs.transition(job, to=jobs.Status.SUCCEEDED, allowed=jobs.ACTIVE, stage="done")
        event(job, "Done: " + ", ".join(f"{n} {verdict}" for verdict, n in counts.items() if n) + ".")
        return "done"
    except Stopped:
        _release(job, owner)
        return "stopped"
    except Exception as error:  # noqa: BLE001 - whatever stops a job is recorded on it, never left running
        message = _without_keys(
            job, error.message if isinstance(error, LabError) else f"{type(error).__name__}: {error}"
        )
        if not isinstance(error, LabError):
            logger.exception("Evaluation %s failed", job.pk)
        _release(job, owner)
        jobs.transition(job, to=jobs.Status.FAILED, allowed=jobs.ACTIVE, error=message[:5000])
        event(job, f"Failed: {message}", level=EvaluationEvent.Level.ERROR)
        return "failed"


def _without_keys(job: EvaluationJob, message: str) -> str:
    """The message with the keys the job sends taken out: a server's own reason may quote what it was sent."""
    judge = Teacher.objects.filter(pk=job.judge_id).values_list("api_key", flat=True).first() if job.judge_id else ""
    for key in (job.server_api_key, judge):
        if key:
            message = message.replace(key, "[API key]")
    return message


def _release(job: EvaluationJob, owner: str) -> None:
    EvaluationJob.objects.filter(pk=job.pk, lease_owner=owner).update(lease_owner="", lease_until=None)


def _stage(job: EvaluationJob, stage: str) -> None:
    EvaluationJob.objects.filter(pk=job.pk).update(stage=stage)


def _renew(job: EvaluationJob) -> None:
    """During long work on this thread (the ticker's heartbeat waits for it): keep the lease."""
    EvaluationJob.objects.filter(pk=job.pk, lease_owner=job.lease_owner).update(lease_until=jobs.lease_until())


def _heartbeat(job_id: int, owner: str) -> bool:
    """Renew the lease and publish progress; False when the job was cancelled or taken over."""
    done = pending_measurements(EvaluationJob(pk=job_id))
    total_left = done.count()
    return bool(
        EvaluationJob.objects.filter(pk=job_id, lease_owner=owner, status=jobs.Status.RUNNING).update(
            lease_until=jobs.lease_until(), done=F("total") - total_left
        )
    )


def _write(answers: list[tuple[int, str]], judged: list) -> None:
    """Answers, then the judgements made of them, in one transaction; no read first (each row is named by id)."""
    marks = []
    for item in judged:
        if item.text is None:
            marks.append((item.key, False, False, None, "", item.error[:2000]))
            continue
        parsed = parse_judgement(item.text)
        marks.append((item.key, True, parsed.rating is not None, parsed.rating, parsed.rationale[:20000], ""))
    with transaction.atomic():
        _update(["answer", "answered"], [(row_id, text.replace("\x00", ""), True) for row_id, text in answers])
        _update(["judged", "parseable", "rating", "rationale", "error"], marks)


_CASTS = {"answer": "text", "answered": "boolean", "judged": "boolean", "parseable": "boolean",
          "rating": "double precision", "rationale": "text", "error": "text"}  # fmt: skip


def _update(fields: list[str], rows: list[tuple]) -> None:
    """Set `fields` of each row (id, *values): on PostgreSQL one UPDATE ... FROM (VALUES ...) a thousand rows,
    which costs a fraction of the CPU of bulk_update's CASE per field and row; elsewhere bulk_update."""
    if not rows:
        return
    if connection.vendor != "postgresql":
        objects = [Measurement(pk=row[0], **dict(zip(fields, row[1:], strict=True))) for row in rows]
        Measurement.objects.bulk_update(objects, fields, batch_size=500)
        return
    table = connection.ops.quote_name(Measurement._meta.db_table)
    values = "(" + ", ".join(["%s::bigint", *(f"%s::{_CASTS[f]}" for f in fields)]) + ")"
    assign = ", ".join(f"{f} = v.{f}" for f in fields)
    with connection.cursor() as cursor:
        for start in range(0, len(rows), 1000):
            chunk = rows[start : start + 1000]
            cursor.execute(
                f"UPDATE {table} AS m SET {assign} FROM (VALUES {', '.join([values] * len(chunk))}) "  # noqa: S608
                f"AS v(id, {', '.join(fields)}) WHERE m.id = v.id",
                [value for row in chunk for value in row],
            )


class _Run:
    def __init__(self, job: EvaluationJob, owner: str, bridge: Bridge):
        self.job, self.owner, self.bridge = job, owner, bridge
        self.pool: JudgePool | None = None
        self.judge_has_key = False
        self.last_beat = 0.0
        self.tick_error: Exception | None = None
        self.answers: list[tuple[int, str]] = []  # written with the next flush, before the judgements made of them

    async def drive(self) -> None:
        client, self.judge_has_key = await self.bridge.call(_judge_client, self.job)
        self.pool = JudgePool(client)
        ticker = asyncio.ensure_future(self._tick())
        try:
            # What an earlier attempt answered but never had judged.
            for row_id, question, reference, answer in await self.bridge.call(_unjudged, self.job):
                await self._judge(row_id, question, reference, answer)
            for role in [Role.CHECKPOINT] + ([Role.BASE] if self.job.base_model else []):
                if self.job.backend == EvaluationJob.Backend.LOCAL:
                    await self._local(role)
                else:
                    await self._server(role)
            await self.bridge.call(_stage, self.job, "judging the last answers")
            while self.pool.in_flight:
                await asyncio.sleep(0.05)
                self._check_judge()
            self._check_judge()
        finally:
            ticker.cancel()
            self.pool.cancel()
            await self._save(self.pool.take())
        await self._flush(beat=True)

    async def _tick(self) -> None:
        try:
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                await self._flush()
        except Exception as error:  # noqa: BLE001 - handed to the main path, which stops on it
            self.tick_error = error

    async def _save(self, judged: list) -> None:
        answers, self.answers = self.answers, []
        if judged or answers:
            await self.bridge.call(_write, answers, judged)

    async def _flush(self, *, beat: bool = False) -> None:
        await self._save(self.pool.take())
        now = time.monotonic()
        if beat or now - self.last_beat >= FLUSH_SECONDS:
            self.last_beat = now
            if not await self.bridge.call(_heartbeat, self.job.pk, self.owner):
                raise Stopped()

    def _check_judge(self) -> None:
        if self.tick_error is not None:
            raise self.tick_error
        if (refused := self.pool.refused) is not None:
            # Every call would be refused alike: stop at the first, saying so, rather than count five failures.
            message = key_refusal(
                who=f"The judge {self.job.judge_config.get('name', '')}",
                endpoint=refused.endpoint,
                status=refused.http_status,
                reason=refused.reason,
                has_key=self.judge_has_key,
            )
            raise LabError(f"{message} Set the teacher's API key (Generation → Teachers), then resume.", field="judge")
        if self.pool.failures_in_row >= JUDGE_DOWN_AFTER:
            # Every call in a row failed: stop asking a judge that is down; resume asks what is left.
            raise LabError(
                f"The judge {self.job.judge_config.get('name', '')} failed {self.pool.failures_in_row} calls in a row "
                f"({self.pool.last_error}). What was measured is kept; resume once the judge answers.",
                field="judge",
            )

    async def _judge(self, row_id: int, question: str, reference: str, answer: str) -> None:
        self._check_judge()
        await self.pool.submit(row_id, judge_messages(question=question, reference=reference, answer=answer))

    async def _local(self, role: str) -> None:
        job = self.job
        path, gguf = (job.model, job.model_gguf) if role == Role.CHECKPOINT else (job.base_model, job.base_gguf)
        call = self.bridge.call
        await call(_stage, self.job, f"{role}: loading {path}")
        model = await call(_load, path, gguf)
        await call(_stage, self.job, f"{role}: held-out loss")
        await call(_losses, self.job, role, model)
        await call(_stage, self.job, f"{role}: multiple choice")
        await call(_choices, self.job, role, model)
        await call(_stage, self.job, f"{role}: answering")
        after = 0
        while batch := await call(_unanswered, self.job, role, ANSWER_BATCH, after):
            after = batch[-1][0]
            texts = await call(model.answer, [q for _, q, _ in batch], max_new_tokens=self.job.max_new_tokens)
            self.answers += [(row[0], text) for row, text in zip(batch, texts, strict=True)]
            for (row_id, question, reference), text in zip(batch, texts, strict=True):
                await self._judge(row_id, question, reference, text)
            await self._flush()

    async def _server(self, role: str) -> None:
        name = self.job.model if role == Role.CHECKPOINT else self.job.base_model
        client = OpenAITeacher(
            base_url=self.job.server_url,
            model=name,
            api_key=self.job.server_api_key,
            timeout=settings.LABWEB_EVALUATION_SERVER_TIMEOUT,
            max_concurrency=settings.LABWEB_EVALUATION_SERVER_CONCURRENCY,
            retry=RetryPolicy(
                attempts=settings.LABWEB_TEACHER_ATTEMPTS, base_delay=settings.LABWEB_TEACHER_RETRY_DELAY
            ),
        )
        answers = JudgePool(client, sampling=Sampling(temperature=0.0, max_tokens=self.job.max_new_tokens, seed=0))
        await self.bridge.call(_stage, self.job, f"{role}: answering on {self.job.server_url}")

        async def answered() -> None:
            done = answers.take()
            if not done:
                return
            failed = [d for d in done if d.text is None]
            if failed:
                failure = failed[0].failure
                if failure is not None and failure.http_status in KEY_REFUSED:
                    message = key_refusal(
                        who="The model server",
                        endpoint=failure.endpoint,
                        status=failure.http_status,
                        reason=failure.reason,
                        has_key=bool(self.job.server_api_key),
                    )
                    raise LabError(
                        f"{message} Start the evaluation again with the server's key (server API key).",
                        field="server_api_key",
                    )
                raise LabError(f"The model server could not answer: {failed[0].error}", field="server_url")
            self.answers += [(d.key[0], d.text) for d in done]
            for d in done:
                await self._judge(d.key[0], d.key[1], d.key[2], d.text)

        after = 0
        try:
            while batch := await self.bridge.call(_unanswered, self.job, role, 500, after):
                after = batch[-1][0]
                for row in batch:
                    await answers.submit(row, [{"role": "user", "content": row[1]}])
                    await answered()
            while answers.in_flight:
                await asyncio.sleep(0.02)
                await answered()
            await answered()
        finally:
            answers.cancel()


def _load(path: str, gguf: str) -> LocalModel:
    source, gguf_file = local_model_source(path, gguf or None)
    return LocalModel(source, gguf_file=gguf_file)


def _judge_client(job: EvaluationJob):
    """The judge's client, and whether it sends an API key (for what a refusal says)."""
    judge = Teacher.objects.filter(pk=job.judge_id).first() if job.judge_id else None
    if judge is None:
        raise LabError("The evaluation's judge was deleted; resume it with another judge.", field="judge")
    return teacher_client(judge), judge.has_api_key


def _unjudged(job: EvaluationJob) -> list[tuple]:
    return list(
        job.measurements.filter(kind=Measurement.Kind.JUDGED, answered=True, judged=False).values_list(
            "pk", "question", "reference", "answer"
        )
    )


def _unanswered(job: EvaluationJob, role: str, limit: int, after: int) -> list[tuple]:
    rows = job.measurements.filter(kind=Measurement.Kind.JUDGED, role=role, answered=False, pk__gt=after)
    return list(rows.order_by("pk").values_list("pk", "question", "reference")[:limit])


def _choices(job: EvaluationJob, role: str, model: LocalModel) -> None:
    rows = list(job.measurements.filter(kind=Measurement.Kind.CHOICE, role=role, picked__isnull=True))
    for start in range(0, len(rows), 20):
        batch = rows[start : start + 20]
        for row in batch:
            scores = model.choice_scores(row.question, tuple(row.choices))
            row.picked = scores.index(max(scores))
        Measurement.objects.bulk_update(batch, ["picked"])
        _renew(job)


def _losses(job: EvaluationJob, role: str, model: LocalModel) -> None:
    field = "checkpoint_loss" if role == Role.CHECKPOINT else "base_loss"
    held = planning.held_out_by_leaf(job)
    todo = LeafResult.objects.filter(job=job, leaf_path__in=list(held), **{f"{field}__isnull": True})
    for result in todo:
        loss = model.loss(held[result.leaf_path])
        LeafResult.objects.filter(pk=result.pk).update(**{field: loss.mean, f"{field}_tokens": loss.tokens})
        _renew(job)
