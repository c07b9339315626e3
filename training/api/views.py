"""The training REST API: thin views over the training services."""

import os
import tarfile
import threading
from pathlib import Path

from django.http import FileResponse, Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from labweb.roles import OPERATOR, role_permission
from training import selectors
from training.api import serializers as s
from training.models import Checkpoint, Dataset, TrainingJob
from training.services import datasets as dataset_services
from training.services import jobs as job_services
from training.services import mixes, uploads
from training.views import dataset_file_response

OperatorWrites = role_permission(write=OPERATOR)


class NewestCursor(CursorPagination):
    ordering = "-id"


class TrainingJobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Training jobs: create with their phases (operators), follow, cancel, resume."""

    permission_classes = [OperatorWrites]
    pagination_class = NewestCursor
    filterset_fields = ["status"]

    def get_queryset(self):
        return TrainingJob.objects.select_related("created_by").prefetch_related("phases")

    def get_serializer_class(self):
        return s.JobDetailSerializer if self.action == "retrieve" else s.JobSerializer

    @extend_schema(request=s.JobCreateSerializer, responses={201: s.JobDetailSerializer})
    def create(self, request: Request) -> Response:
        serializer = s.JobCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job = job_services.job_create(user=request.user, **serializer.validated_data)
        return Response(s.JobDetailSerializer(job).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.JobCreateSerializer, responses=s.MixPhaseSerializer(many=True))
    @action(detail=False, methods=["post"])
    def mix(self, request: Request) -> Response:
        """The mix the job would train on, before it starts (operators): per phase, samples and tokens per source
        and per leaf. Takes what `POST /api/training-jobs/` takes; creates nothing."""
        serializer = s.JobCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        return Response(mixes.job_mix(base_model=data["base_model"], phases=data["phases"]))

    @extend_schema(request=None, responses=s.JobDetailSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        job = job_services.job_cancel(job=self.get_object(), user=request.user)
        return Response(s.JobDetailSerializer(job).data)

    @extend_schema(request=None, responses=s.JobDetailSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk=None) -> Response:
        job = job_services.job_resume(job=self.get_object(), user=request.user)
        return Response(s.JobDetailSerializer(job).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("phase", int, description="One phase's steps (its id)"),
            OpenApiParameter("after", int, description="With phase: only steps after this one (for live charts)"),
        ],
        responses=s.StepMetricSerializer(many=True),
    )
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def metrics(self, request: Request, pk=None) -> Response:
        params = request.query_params
        phase = selectors.int_param(params, "phase", default=0) or None
        after = selectors.int_param(params, "after", default=0)
        metrics = selectors.job_metrics(self.get_object(), phase_id=phase, after=after)
        return Response(s.StepMetricSerializer(metrics, many=True).data)

    @extend_schema(responses=s.TrainingEventSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=NewestCursor, filter_backends=[])
    def events(self, request: Request, pk=None) -> Response:
        page = self.paginate_queryset(self.get_object().events.all())
        return self.get_paginated_response(s.TrainingEventSerializer(page, many=True).data)


class CheckpointViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Checkpoints with their lineage; `download` streams the Hugging Face folder as a .tar.gz."""

    serializer_class = s.CheckpointSerializer
    pagination_class = NewestCursor
    filterset_fields = ["phase", "phase__job"]

    def get_queryset(self):
        return Checkpoint.objects.select_related("phase")

    @extend_schema(responses={(200, "application/gzip"): bytes})
    @action(detail=True, methods=["get"])
    def download(self, request: Request, pk=None):
        checkpoint = self.get_object()
        folder = Path(checkpoint.path)
        if not folder.is_dir():
            raise Http404("The checkpoint's folder is gone from the training storage.")
        return FileResponse(
            _tar_gz(folder), as_attachment=True, filename=f"{folder.name}.tar.gz", content_type="application/gzip"
        )


def _tar_gz(folder: Path):
    """The folder as a gzip'd tar through a pipe: a thread writes, the response reads 1 MiB at a time, so a
    checkpoint of many GB never sits in memory."""
    read_end, write_end = os.pipe()

    def write() -> None:
        with os.fdopen(write_end, "wb") as sink, tarfile.open(fileobj=sink, mode="w|gz") as archive:
            try:
                archive.add(folder, arcname=folder.name)
            except BrokenPipeError:  # the client went away
                pass

    threading.Thread(target=write, daemon=True).start()
    with os.fdopen(read_end, "rb") as source:
        yield from iter(lambda: source.read(1 << 20), b"")


class UploadViewSet(viewsets.ViewSet):
    """JSONL files in the training storage that recipes can name (`uploads/NAME.jsonl`)."""

    permission_classes = [OperatorWrites]
    parser_classes = [MultiPartParser]

    @extend_schema(responses=s.UploadedSerializer(many=True))
    def list(self, request: Request) -> Response:
        return Response(uploads.upload_list())

    @extend_schema(request={"multipart/form-data": s.UploadSerializer}, responses={201: s.UploadedSerializer})
    def create(self, request: Request) -> Response:
        serializer = s.UploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        file = serializer.validated_data["file"]
        stored = uploads.upload_store(name=file.name, chunks=file.chunks(), user=request.user)
        return Response(stored, status=status.HTTP_201_CREATED)


class DatasetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Dataset builds of approved samples; `POST` queues one (operators). `files/{role}` downloads a file (the
    paths in `files` are relative to the training storage, where training reads them)."""

    serializer_class = s.DatasetSerializer
    permission_classes = [OperatorWrites]
    pagination_class = NewestCursor
    filterset_fields = ["status", "plan"]

    def get_queryset(self):
        return Dataset.objects.select_related("created_by").prefetch_related("files")

    def create(self, request: Request) -> Response:
        serializer = s.DatasetSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = {k: v for k, v in serializer.validated_data.items() if k not in ("files", "created_by")}
        dataset = dataset_services.dataset_create(user=request.user, **data)
        return Response(s.DatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[OpenApiParameter("role", str, OpenApiParameter.PATH, description="A file's role, as in files")],
        responses={(200, "application/jsonl"): bytes},
    )
    @action(detail=True, methods=["get"], url_path=r"files/(?P<role>[a-z_]+)", filter_backends=[])
    def file(self, request: Request, pk=None, role: str = ""):
        """One file of the build, messages JSONL as InstructLab reads it."""
        file = self.get_object().files.filter(role=role).first()
        if file is None:
            raise Http404(f"This dataset has no {role} file.")
        return dataset_file_response(file)
