"""The generation REST API: thin viewsets over the generation services and selectors."""

import functools

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from generation import selectors
from generation.api import serializers as s
from generation.api.filters import RunEventFilter, RunFilter, SampleFilter, WorkItemFilter
from generation.models import GenerationRun, LeafCounter, RunEvent, Sample, Teacher, WorkItem
from generation.services import runs as run_services
from generation.services import teachers as teacher_services
from labweb.errors import ConflictError, LabError
from labweb.roles import OPERATOR, role_permission

OperatorWrites = role_permission(write=OPERATOR)


class IdCursor(CursorPagination):
    ordering = "id"


class NewestCursor(CursorPagination):
    ordering = "-id"


class LeafCursor(CursorPagination):
    ordering = "leaf_path"
    page_size = 500


def _valid(serializer_class, data, **kwargs) -> dict:
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


class TeacherViewSet(viewsets.ModelViewSet):
    """Teacher configurations. The API key is write-only; `has_api_key` says whether one is stored."""

    queryset = Teacher.objects.select_related("created_by").order_by("name")
    serializer_class = s.TeacherSerializer
    permission_classes = [OperatorWrites]
    pagination_class = None
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]

    def create(self, request: Request, *args, **kwargs) -> Response:
        data = _valid(s.TeacherSerializer, request.data)
        teacher = teacher_services.teacher_create(user=request.user, api_key=data.pop("api_key", None) or "", **data)
        return Response(s.TeacherSerializer(teacher).data, status=status.HTTP_201_CREATED)

    def update(self, request: Request, *args, **kwargs) -> Response:
        teacher = self.get_object()
        data = _valid(s.TeacherSerializer, request.data, partial=kwargs.get("partial", False))
        # Left out keeps the stored key; "" or null removes it.
        api_key = (data.pop("api_key") or "") if "api_key" in data else None
        teacher = teacher_services.teacher_update(teacher=teacher, user=request.user, api_key=api_key, **data)
        return Response(s.TeacherSerializer(teacher).data)

    def destroy(self, request: Request, *args, **kwargs) -> Response:
        """Delete a teacher that no run used (runs keep their teacher for lineage: 409 then)."""
        teacher_services.teacher_delete(teacher=self.get_object(), user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Generation runs, newest first. The detail carries the live progress the run page shows."""

    permission_classes = [OperatorWrites]
    filterset_class = RunFilter
    pagination_class = NewestCursor

    def get_queryset(self):
        if self.action == "list":
            return selectors.run_list()
        return GenerationRun.objects.select_related("teacher", "created_by", "baseline")

    def get_serializer_class(self):
        return s.RunSerializer if self.action == "list" else s.RunDetailSerializer

    @extend_schema(request=s.RunCreateSerializer, responses={201: s.RunDetailSerializer})
    def create(self, request: Request) -> Response:
        data = _valid(s.RunCreateSerializer, request.data)
        run = run_services.run_create(
            teacher=data["teacher"],
            user=request.user,
            scope=data["scope"],
            baseline=data["baseline"],
            leaf_ids=data["leaves"] or None,
            samples_per_leaf=data["samples_per_leaf"],
            config=data["config"],
            name=data["name"],
        )
        return Response(s.RunDetailSerializer(run).data, status=status.HTTP_201_CREATED)

    def _command(self, service) -> Response:
        run = self.get_object()
        try:
            run = service(run=run, user=self.request.user)
        except LabError as error:
            # The run is in a state the command does not apply to: a conflict with its current state.
            raise ConflictError(error.message, field=error.field) from None
        return Response(s.RunDetailSerializer(run).data)

    @extend_schema(request=None, responses={200: s.RunDetailSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        """Cancel a queued or running run; work in flight stops at its next heartbeat and keeps its samples."""
        return self._command(run_services.run_cancel)

    @extend_schema(request=s.RunResumeSerializer, responses={200: s.RunDetailSerializer})
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk=None) -> Response:
        """Queue again what is not done (paused, cancelled, failed, abandoned work items). Done work stays. A run asks
        the teacher as it started with it; `with_current_teacher` uses the teacher as it is now instead."""
        data = _valid(s.RunResumeSerializer, request.data)
        resume = functools.partial(run_services.run_resume, with_current_teacher=data["with_current_teacher"])
        return self._command(resume)

    @extend_schema(request=None, responses={200: s.RunDetailSerializer})
    @action(detail=True, methods=["post"], url_path="retry-failed")
    def retry_failed(self, request: Request, pk=None) -> Response:
        """Try a finished run's failed work items again (each with its full count of retries); 409 when none failed."""
        return self._command(run_services.run_retry_failed)

    @extend_schema(responses=s.LeafProgressSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=LeafCursor, filter_backends=[])
    def leaves(self, request: Request, pk=None) -> Response:
        """Every leaf of the run with its work items by state, target and kept samples, by path."""
        run = self.get_object()
        page = self.paginate_queryset(LeafCounter.objects.filter(run=run))
        return self.get_paginated_response(s.LeafProgressSerializer(selectors.run_leaves(run, page), many=True).data)

    @extend_schema(
        parameters=[OpenApiParameter("level", str, enum=RunEvent.Level.values, description="Only this level")],
        responses=s.RunEventSerializer(many=True),
    )
    @action(detail=True, methods=["get"], pagination_class=NewestCursor, filter_backends=[])
    def events(self, request: Request, pk=None) -> Response:
        """The run's log, newest first."""
        events = RunEventFilter(request.query_params, queryset=RunEvent.objects.filter(run=self.get_object())).qs
        page = self.paginate_queryset(events)
        return self.get_paginated_response(s.RunEventSerializer(page, many=True).data)


class WorkItemViewSet(viewsets.ReadOnlyModelViewSet):
    """Work items of runs (filter with ?run=): state, lease, attempts, counters and the error of each."""

    queryset = WorkItem.objects.all()
    permission_classes = [OperatorWrites]
    filterset_class = WorkItemFilter
    pagination_class = IdCursor

    def get_queryset(self):
        return WorkItem.objects.all() if self.action == "retrieve" else WorkItem.objects.defer("spec")

    def get_serializer_class(self):
        return s.WorkItemDetailSerializer if self.action == "retrieve" else s.WorkItemSerializer


class SampleViewSet(viewsets.ReadOnlyModelViewSet):
    """Generated samples with their lineage; the detail adds the teacher's raw outputs."""

    queryset = Sample.objects.all()
    permission_classes = [OperatorWrites]
    filterset_class = SampleFilter
    pagination_class = IdCursor

    def get_queryset(self):
        return Sample.objects.all() if self.action == "retrieve" else Sample.objects.defer("raw")

    def get_serializer_class(self):
        return s.SampleDetailSerializer if self.action == "retrieve" else s.SampleSerializer
