"""One node's share of a phase: take its rank under a lease, launch torchrun, follow it, record what it did.

Rank 0 also prepares the phase (mixes its recipe into one JSONL, writes the trainer's configuration, publishes
the rendezvous endpoint) and turns the trainer's `events.jsonl` into metrics, checkpoints and the phase's
outcome. Every step is idempotent: a redelivered task finds the lease held and does nothing; a phase whose
worker died is handed back by the reaper and resumes from the trainer's last full state.
"""

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from labweb import jobs
from labweb.errors import LabError
from training.models import Checkpoint, StepMetric, TrainingEvent, TrainingJob, TrainingNode, TrainingPhase
from training.services.jobs import event, job_dispatch, phase_seed, stored_recipe
from training.signals import phase_succeeded
from training.trainer.config import TrainConfig
from training.trainer.events import EVENTS, read_events
from training.trainer.mixing import mix

POLL_SECONDS = 1.0
RENDEZVOUS_WAIT_SECONDS = 600
TERMINAL_EVENTS = ("done", "cancelled", "error")


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def lease_seconds() -> int:
    return settings.LABWEB_TRAINING_LEASE_SECONDS


def node_run(*, phase_id: int, rank: int) -> str:
    phase = TrainingPhase.objects.select_related("job").get(pk=phase_id)
    job = phase.job
    if job.status == jobs.Status.CANCELLED or phase.status not in jobs.ACTIVE:
        return f"phase {phase_id} is {phase.status}; nothing to do"
    node, _ = TrainingNode.objects.get_or_create(phase=phase, rank=rank)
    now = timezone.now()
    taken = TrainingNode.objects.filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now), pk=node.pk).update(
        lease_owner=worker_identity(),
        lease_until=jobs.lease_until(lease_seconds()),
        attempts=F("attempts") + 1,
        started_at=now,
        finished_at=None,
        exit_code=None,
    )
    if not taken:
        return f"rank {rank} of phase {phase_id} is held by another worker"
    node.refresh_from_db()
    code = None
    try:
        try:
            config_path = _prepare(phase) if rank == 0 else _wait_for_rank_zero(phase, node)
            rendezvous = _rendezvous(phase, node)
        except LabError as error:
            if rank == 0:
                _fail(phase, f"{error}", kind="bad_input")
            return "refused"
        if rank == 0:
            jobs.transition(job, to=jobs.Status.RUNNING, allowed=[jobs.Status.QUEUED])
            jobs.transition(phase, to=jobs.Status.RUNNING, allowed=[jobs.Status.QUEUED])
            event(job, f"{phase.name}: started on {node.lease_owner} ({job.nodes} node(s)).", phase=phase)
        code, outcome = _launch_and_follow(phase, node, config_path, rendezvous)
    finally:
        TrainingNode.objects.filter(pk=node.pk, lease_owner=node.lease_owner).update(
            lease_owner="", lease_until=None, exit_code=code, finished_at=timezone.now()
        )
    if rank == 0:
        _conclude(phase, code, outcome)
    return f"rank {rank} exited {code}"


def _prepare(phase: TrainingPhase) -> Path:
    """Mix the phase's recipe into its data file (once), and write the trainer's configuration."""
    out = Path(phase.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = dict(phase.config)
    data = out / "data.jsonl"
    if not (phase.data_sha256 and data.exists()):
        recipe, names = stored_recipe(phase.recipe, path=f"{phase.name} recipe")
        written = mix(recipe, data, seed=phase_seed(config))
        sources = [{**source, "path": names[source["path"]]} for source in written.sources]
        TrainingPhase.objects.filter(pk=phase.pk).update(
            data_path=str(data), data_sha256=written.sha256, data_samples=written.samples, data_sources=sources
        )
        event(phase.job, f"{phase.name}: {written.samples} samples mixed ({written.sha256[:12]}).", phase=phase)
    model, gguf = _starting_model(phase)
    TrainingPhase.objects.filter(pk=phase.pk).update(model_path=model)
    trainer = TrainConfig.from_dict(
        {**config, "model": model, "gguf_file": gguf, "data": [str(data)], "output_dir": str(out)}
    )
    path = out / "config.json"
    path.write_text(json.dumps(trainer.as_dict(), indent=2, default=list))
    return path


def _starting_model(phase: TrainingPhase) -> tuple[str, str | None]:
    """The base model for the first phase (a GGUF file as the Hugging Face folder made of it once, shared by
    every job); for the others, the previous phase's last checkpoint."""
    if phase.order == 0:
        from generation.services.teachers import local_model_source, resolve_local_model

        return local_model_source(*resolve_local_model(phase.job.base_model, phase.job.gguf_file))
    previous = Checkpoint.objects.filter(phase__job=phase.job, phase__order=phase.order - 1).order_by("-step").first()
    if previous is None:
        raise LabError(f"The phase before {phase.name} left no checkpoint to start from.", field="phases")
    return previous.path, None


def _rendezvous(phase: TrainingPhase, node: TrainingNode) -> list[str]:
    if phase.job.nodes == 1:
        return ["--standalone"]
    if node.rank == 0:
        host = settings.LABWEB_TRAINING_RENDEZVOUS_HOST or socket.getfqdn()
        with socket.socket() as sock:
            sock.bind(("", 0))
            port = sock.getsockname()[1]
        endpoint = f"{host}:{port}"
        TrainingNode.objects.filter(pk=node.pk).update(rendezvous=endpoint)
    else:
        endpoint = TrainingNode.objects.get(phase=phase, rank=0).rendezvous
    return [
        f"--nnodes={phase.job.nodes}",
        f"--node-rank={node.rank}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={endpoint}",
        f"--rdzv-id=labweb-phase-{phase.pk}-{node.attempts}",
        # Rank 0 hosts the store: torchrun's own guess compares the endpoint with the machine's names and
        # addresses, and misses a name it has only through DNS (then no node hosts it and every node waits).
        f"--rdzv-conf=is_host={int(node.rank == 0)}",
    ]


def _wait_for_rank_zero(phase: TrainingPhase, node: TrainingNode) -> Path:
    deadline = time.monotonic() + RENDEZVOUS_WAIT_SECONDS
    while time.monotonic() < deadline:
        if not TrainingPhase.objects.filter(pk=phase.pk, status__in=jobs.ACTIVE).exists():
            raise LabError(f"{phase.name} stopped before rank 0 started it.", field="nodes")
        leader = TrainingNode.objects.filter(phase=phase, rank=0).exclude(rendezvous="").first()
        if leader is not None and (Path(phase.output_dir) / "config.json").exists():
            node.attempts = leader.attempts  # the rendezvous id follows rank 0's attempt
            return Path(phase.output_dir) / "config.json"
        _renew(node)
        time.sleep(POLL_SECONDS)
    raise LabError(f"Rank 0 of {phase.name} did not start within {RENDEZVOUS_WAIT_SECONDS} s.", field="nodes")


def _die_with_parent() -> None:
    """In the child, before exec: if this worker dies (even by SIGKILL), the kernel sends torchrun SIGTERM."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _launch_and_follow(phase: TrainingPhase, node: TrainingNode, config: Path, rendezvous: list[str]):
    job = phase.job
    out = Path(phase.output_dir)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={job.processes_per_node}",
        *rendezvous,
        "-m",
        "training.trainer",
        "--config",
        str(config),
    ]
    # Each trainer process gets its share of the machine's cores (torchrun would give it one).
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // job.processes_per_node))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"}
    if node.rank == 0:
        _ingest(phase)  # what an attempt that died wrote after its last read; its outcome is not this attempt's
    with (out / f"node-{node.rank}.log").open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        TrainingNode.objects.filter(pk=node.pk).update(pid=process.pid)
        outcome = None
        while process.poll() is None:
            time.sleep(POLL_SECONDS)
            _renew(node)
            if TrainingJob.objects.filter(pk=job.pk, status=jobs.Status.CANCELLED).exists():
                (out / "STOP").touch()
            if node.rank == 0:
                outcome = _ingest(phase) or outcome
        if node.rank == 0:
            outcome = _ingest(phase) or outcome
    return process.returncode, outcome


def _renew(node: TrainingNode) -> None:
    TrainingNode.objects.filter(pk=node.pk, lease_owner=node.lease_owner).update(
        lease_until=jobs.lease_until(lease_seconds())
    )


def _ingest(phase: TrainingPhase) -> dict | None:
    """Read what the trainer wrote since last time into metrics, checkpoints and progress; the last terminal event."""
    offset = TrainingPhase.objects.values_list("events_offset", flat=True).get(pk=phase.pk)
    events, offset = read_events(Path(phase.output_dir) / EVENTS, offset)
    if not events:
        return None
    progress, metrics, outcome = {}, [], None
    for item in events:
        kind = item.get("event")
        if kind == "start":
            progress["total_steps"] = item.get("total_steps", 0)
        elif kind == "step":
            metrics.append(
                StepMetric(
                    phase=phase,
                    step=item["step"],
                    epoch=item["epoch"],
                    loss=item["loss"],
                    learning_rate=item["learning_rate"],
                    grad_norm=item["grad_norm"],
                    tokens_per_second=item["tokens_per_second"],
                    samples_per_second=item["samples_per_second"],
                    memory_mb=item["memory_mb"],
                )
            )
            progress.update(
                step=item["step"],
                epoch=item["epoch"],
                samples_seen=item["samples_seen"],
                total_steps=item.get("total_steps", 0),
            )
        elif kind == "checkpoint":
            Checkpoint.objects.update_or_create(
                phase=phase,
                name=item["name"],
                defaults={
                    "path": item["path"],
                    "step": item["step"],
                    "epoch": item["epoch"],
                    "samples_seen": item["samples_seen"],
                    "lineage": _lineage(phase, item),
                },
            )
        elif kind in TERMINAL_EVENTS:
            outcome = item
    if metrics:  # a resumed phase repeats the steps after its last saved state: the later values win
        StepMetric.objects.bulk_create(
            metrics,
            update_conflicts=True,
            unique_fields=["phase", "step"],
            update_fields=[
                "epoch",
                "loss",
                "learning_rate",
                "grad_norm",
                "tokens_per_second",
                "samples_per_second",
                "memory_mb",
            ],
        )
    TrainingPhase.objects.filter(pk=phase.pk).update(events_offset=offset, **progress)
    return outcome


def _lineage(phase: TrainingPhase, item: dict) -> dict:
    phase.refresh_from_db(fields=["data_sha256", "data_samples", "data_sources", "model_path"])
    return {
        "job": phase.job_id,
        "phase": phase.name,
        "data_sha256": phase.data_sha256,
        "data_samples": phase.data_samples,
        "sources": phase.data_sources,
        "recipe": phase.recipe,
        "config": phase.config,
        "started_from": phase.model_path,
    }


def _conclude(phase: TrainingPhase, code: int | None, outcome: dict | None) -> None:
    phase.refresh_from_db()
    job = phase.job
    kind = (outcome or {}).get("event")
    if kind == "done" and code == 0:
        jobs.transition(phase, to=jobs.Status.SUCCEEDED, allowed=jobs.ACTIVE, exit_kind="done")
        event(job, f"{phase.name}: done at step {phase.step}.", phase=phase)
        for _, result in phase_succeeded.send_robust(TrainingPhase, phase=phase):
            if isinstance(result, Exception):  # a listener's failure never stops the job
                event(job, f"After {phase.name}: {result}", phase=phase, level=TrainingEvent.Level.WARNING)
        if job.phases.exclude(status=jobs.Status.SUCCEEDED).exists():
            job_dispatch(job)
        else:
            jobs.transition(job, to=jobs.Status.SUCCEEDED, allowed=jobs.ACTIVE)
            event(job, "Every phase is done.")
    elif kind == "cancelled":
        jobs.transition(phase, to=jobs.Status.CANCELLED, allowed=jobs.ACTIVE, exit_kind="cancelled")
        event(
            job,
            f"{phase.name}: stopped at step {phase.step}; a checkpoint and the full state were saved.",
            phase=phase,
            level=TrainingEvent.Level.WARNING,
        )
    elif kind == "error":
        where = LabError(
            outcome.get("message") or "The trainer failed.",
            field=outcome.get("field"),
            line=outcome.get("line"),
            path=outcome.get("path"),
        )
        _fail(phase, str(where), kind=outcome.get("kind", "crash"))
    else:
        tail = _log_tail(Path(phase.output_dir) / "node-0.log")
        _fail(phase, f"torchrun exited {code} without saying why; the end of its log:\n{tail}", kind="crash")


def _fail(phase: TrainingPhase, message: str, *, kind: str) -> None:
    jobs.transition(phase, to=jobs.Status.FAILED, allowed=jobs.ACTIVE, error=message, exit_kind=kind)
    jobs.transition(phase.job, to=jobs.Status.FAILED, allowed=jobs.ACTIVE, error=f"{phase.name}: {message}")
    event(phase.job, f"{phase.name} failed ({kind}): {message}", phase=phase, level=TrainingEvent.Level.ERROR)


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def nodes_reap() -> int:
    """Hand back phases whose worker died: every node of the phase starts again (torchrun's rendezvous needs all),
    and the trainer resumes from its last full state. Then send again the phases still queued whose rank 0 no
    worker took (`node_run` claims each rank: a second message finds it held, or the phase gone on, and leaves)."""
    now = timezone.now()
    expired = TrainingNode.objects.filter(
        lease_until__lt=now, phase__status__in=jobs.ACTIVE, phase__job__status__in=jobs.ACTIVE
    ).select_related("phase__job")
    phases = {node.phase for node in expired}
    for phase in phases:
        reset = TrainingNode.objects.filter(phase=phase, lease_until__lt=now).update(
            lease_owner="", lease_until=None, rendezvous=""
        )
        if reset:
            TrainingPhase.objects.filter(pk=phase.pk).update(status=jobs.Status.QUEUED)
            event(
                phase.job,
                f"{phase.name}: its worker stopped answering; started again from the last saved state.",
                phase=phase,
                level=TrainingEvent.Level.WARNING,
            )
            job_dispatch(phase.job)
    return len(phases) + phases_resend()


def phases_resend() -> int:
    def unclaimed(phase: TrainingPhase) -> None:
        event(phase.job, f"{phase.name}: {jobs.resent_message(phase)}", phase=phase, level=TrainingEvent.Level.WARNING)
        for rank in range(phase.job.nodes):
            jobs.send_task_on_commit("training.tasks.run_phase_node", phase.pk, rank)

    started = TrainingNode.objects.filter(phase=OuterRef("pk"), rank=0).exclude(lease_owner="")
    waiting = TrainingPhase.objects.filter(~Exists(started), status=jobs.Status.QUEUED, job__status__in=jobs.ACTIVE)
    return jobs.resend_unclaimed(waiting.select_related("job"), unclaimed)
