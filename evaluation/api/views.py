"""The evaluation REST API: operators start, cancel and resume; every role reads."""

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from evaluation import selectors
from evaluation.api import serializers as s
from evaluation.services import jobs as services
from evaluation.services import results
from labweb.errors import LabError
from labweb.roles import OPERATOR, role_permission

OperatorWrites = role_permission(write=OPERATOR)


class NewestCursor(CursorPagination):
    ordering = "-id"


class ByIdCursor(CursorPagination):
    ordering = "id"
    page_size = 100


class EvaluationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Evaluation jobs: a checkpoint against its base per leaf; `leaves`, `measurements`, `export`, `compare`."""

    permission_classes = [OperatorWrites]
    pagination_class = NewestCursor
    filterset_fields = ["status", "checkpoint", "training_job"]

    def get_queryset(self):
        return selectors.job_list()

    def get_serializer_class(self):
        return s.EvaluationDetailSerializer if self.action == "retrieve" else s.EvaluationSerializer

    @extend_schema(request=s.EvaluationCreateSerializer, responses={201: s.EvaluationDetailSerializer})
    def create(self, request: Request) -> Response:
        serializer = s.EvaluationCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job = services.evaluation_create(user=request.user, **serializer.validated_data)
        return Response(s.EvaluationDetailSerializer(job).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=s.EvaluationDetailSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        job = services.evaluation_cancel(job=self.get_object(), user=request.user)
        return Response(s.EvaluationDetailSerializer(job).data)

    @extend_schema(request=None, responses=s.EvaluationDetailSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk=None) -> Response:
        job = services.evaluation_resume(job=self.get_object(), user=request.user)
        return Response(s.EvaluationDetailSerializer(job).data)

    @extend_schema(responses=s.LeafResultSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def leaves(self, request: Request, pk=None) -> Response:
        return Response(s.LeafResultSerializer(self.get_object().leaf_results.all(), many=True).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("leaf", str, description="One leaf's measurements"),
            OpenApiParameter("kind", str, description="judged or choice"),
        ],
        responses=s.MeasurementSerializer(many=True),
    )
    @action(detail=True, methods=["get"], pagination_class=ByIdCursor, filter_backends=[])
    def measurements(self, request: Request, pk=None) -> Response:
        rows = self.get_object().measurements.all()
        leaf, kind = (selectors.text_param(request.query_params, name) for name in ("leaf", "kind"))
        if leaf:
            rows = rows.filter(leaf_path=leaf)
        if kind:
            rows = rows.filter(kind=kind)
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(s.MeasurementSerializer(page, many=True).data)

    @extend_schema(responses=s.EventSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=NewestCursor, filter_backends=[])
    def events(self, request: Request, pk=None) -> Response:
        page = self.paginate_queryset(self.get_object().events.all())
        return self.get_paginated_response(s.EventSerializer(page, many=True).data)

    @extend_schema(
        parameters=[OpenApiParameter("as", str, enum=["json", "csv"], description="json (default) or csv")],
        responses={(200, "application/json"): OpenApiTypes.OBJECT, (200, "text/csv"): OpenApiTypes.STR},
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def export(self, request: Request, pk=None):
        job = self.get_object()
        kind = request.query_params.get("as") or "json"
        if kind not in ("json", "csv"):
            raise LabError("as must be json or csv.", field="as")
        body = results.export_csv(job) if kind == "csv" else selectors.export_json(job)
        response = StreamingHttpResponse(body, content_type="text/csv" if kind == "csv" else "application/json")
        response["Content-Disposition"] = f'attachment; filename="evaluation-{job.pk}.{kind}"'
        return response

    @extend_schema(
        parameters=[
            OpenApiParameter("first", int, description="An evaluation's id"),
            OpenApiParameter("second", int, description="Another's; without both, the answer is empty"),
        ],
        responses=s.ComparisonRowSerializer(many=True),
    )
    @action(detail=False, methods=["get"], pagination_class=None, filter_backends=[])
    def compare(self, request: Request) -> Response:
        first = selectors.job_param(request.query_params, "first")
        second = selectors.job_param(request.query_params, "second")
        if first is None or second is None:
            return Response([])
        return Response(s.ComparisonRowSerializer(results.compare_jobs(first, second), many=True).data)
