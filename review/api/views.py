"""The review REST API: one small view per command, each calling the service the pages call."""

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labweb.api import call_with_precondition, expected_revision
from labweb.errors import LabError
from labweb.roles import REVIEWER, has_role, role_permission
from review import selectors
from review.api import serializers as s
from review.core import rules
from review.models import BulkJob, ReviewItem
from review.queue import PAGE_SIZE, Queue, page
from review.services import bulk as bulk_services
from review.services.claims import claim_seconds, queue_claim
from review.services.decisions import decision_undo, sample_decide

ReviewerWrites = role_permission(write=REVIEWER)
ERROR = OpenApiResponse(description='{"error": {"message", "field", "line", "path"}, "errors": [...]}')
QUEUE_PARAMETERS = [
    OpenApiParameter(name, str, description=description)
    for name, description in [
        ("state", "pending (default), approved, rejected, edited or any"),
        ("run", "A run id"),
        ("path", "A leaf path, or a branch: every leaf under it"),
        ("teacher", "Teacher model"),
        ("kind", "skills or knowledge"),
        ("duplicate", "yes or no: only near-duplicates, or none"),
        ("score_min", "Lowest judge score"),
        ("score_max", "Highest judge score"),
        ("q", "Full-text search of question and answer"),
        ("sort", "age (default), -age, score, -score or leaf"),
        ("cursor", "The next or previous cursor of a page"),
        ("page_size", f"Rows a page (default {PAGE_SIZE}, at most 200)"),
    ]
]


def _item(pk: int) -> ReviewItem:
    item = selectors.item_for_screen(pk)
    if item is None:
        raise NotFound(f"Sample {pk} is gone or was never opened for review.")
    return item


def _item_response(item: ReviewItem, *, code: int = 200) -> Response:
    response = Response(s.ReviewItemDetailSerializer(item).data, status=code)
    response["ETag"] = f'"{item.version}"'
    return response


def _expected_version(request: Request, data: dict) -> int | None:
    """The version decided on: If-Match (the ETag of the item) or `version` in the body."""
    return expected_revision(request, {"revision": data.get("version")})


def _valid(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _queue(data) -> Queue:
    return Queue.parse({k: "" if v is None else str(v) for k, v in dict(data).items()})


class ItemList(APIView):
    """The queue: samples to review with their state, filtered and sorted, in keyset (cursor) pages."""

    permission_classes = [ReviewerWrites]

    @extend_schema(
        operation_id="review_items_list",
        parameters=QUEUE_PARAMETERS,
        responses=inline_serializer(
            "ReviewItemPage",
            {
                "next": serializers.CharField(allow_null=True),
                "previous": serializers.CharField(allow_null=True),
                "results": s.ReviewItemSerializer(many=True),
            },
        ),
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        queue = Queue.parse(params)
        try:
            size = int(params.get("page_size") or PAGE_SIZE)
        except ValueError:
            raise LabError("page_size must be a whole number.", field="page_size") from None
        reviewer = request.user if has_role(request.user, REVIEWER) else None
        # Each row's question by a subquery the page's LIMIT applies to (a join would let PostgreSQL merge-join
        # the whole sample table: see queue.for_list), in the same round trip.
        rows = page(
            queue.queryset(reviewer=reviewer)
            .extra(select={"sample_question": s.SAMPLE_QUESTION})
            .values(*s.LIST_COLUMNS, "sample_question"),
            queue.order,
            cursor=params.get("cursor", ""),
            size=size,
        )

        def link(cursor):
            if not cursor:
                return None
            query = params.copy()
            query["cursor"] = cursor
            return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")

        return Response(
            {
                "next": link(rows.next_cursor),
                "previous": link(rows.previous_cursor),
                "results": s.list_rows(rows.items),
            }
        )


class ItemDetail(APIView):
    """One sample with what a reviewer weighs: seeds, source chunk, judges, prompts, diff. ETag: its version."""

    permission_classes = [ReviewerWrites]

    @extend_schema(responses=s.ReviewItemDetailSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return _item_response(_item(pk))


class ItemDecide(APIView):
    """Approve, or reject with an optional reason and note. Send the ETag in If-Match (412 when stale) or the
    `version` in the body (409 when stale, naming who decided what)."""

    permission_classes = [ReviewerWrites]

    @extend_schema(
        request=s.DecideSerializer, responses={200: s.ReviewItemDetailSerializer, 404: ERROR, 409: ERROR, 412: ERROR}
    )
    def post(self, request: Request, pk: int) -> Response:
        data = _valid(s.DecideSerializer, request.data)
        item = call_with_precondition(
            request,
            sample_decide,
            sample_id=pk,
            reviewer=request.user,
            action=data["action"],
            expected_version=_expected_version(request, data),
            reason=data["reason"],
            note=data["note"],
        )
        return _item_response(_item(item.pk))


class ItemEdit(APIView):
    """Edit question and answer and approve; the original stays on the sample and the detail shows the diff."""

    permission_classes = [ReviewerWrites]

    @extend_schema(request=s.EditSerializer, responses={200: s.ReviewItemDetailSerializer, 409: ERROR, 412: ERROR})
    def post(self, request: Request, pk: int) -> Response:
        data = _valid(s.EditSerializer, request.data)
        item = call_with_precondition(
            request,
            sample_decide,
            sample_id=pk,
            reviewer=request.user,
            action=rules.EDIT,
            expected_version=_expected_version(request, data),
            note=data["note"],
            question=data["question"],
            response=data["response"],
        )
        return _item_response(_item(item.pk))


class Undo(APIView):
    """Take back your last `steps` decisions, newest first; a bulk decision is taken back as a whole."""

    permission_classes = [ReviewerWrites]

    @extend_schema(request=s.UndoSerializer, responses={200: s.DecisionSerializer(many=True), 400: ERROR})
    def post(self, request: Request) -> Response:
        data = _valid(s.UndoSerializer, request.data)
        undone = decision_undo(reviewer=request.user, steps=data["steps"])
        return Response(s.DecisionSerializer(undone, many=True).data)


class Claim(APIView):
    """Hold a batch of the queue for yourself (others skip it) until it expires."""

    permission_classes = [ReviewerWrites]

    @extend_schema(request=s.ClaimSerializer, responses={200: s.ClaimResultSerializer, 409: ERROR})
    def post(self, request: Request) -> Response:
        data = _valid(s.ClaimSerializer, request.data)
        ids = queue_claim(reviewer=request.user, queue=_queue(data["filters"]), size=data["size"])
        until = ReviewItem.objects.filter(pk=ids[0]).values_list("claimed_until", flat=True).first()
        return Response({"ids": ids, "until": until, "seconds": claim_seconds()})


class BulkPreview(APIView):
    """How many pending samples a bulk decision would take now: the count to confirm."""

    permission_classes = [ReviewerWrites]

    @extend_schema(request=s.BulkSerializer, responses={200: s.BulkPreviewSerializer, 400: ERROR})
    def post(self, request: Request) -> Response:
        data = _valid(s.BulkSerializer, request.data)
        count, ceiling = bulk_services.bulk_preview(
            queue=_queue(data["filters"]), selected=data["selected"], excluded=data["excluded"], reviewer=request.user
        )
        return Response({"count": count, "ceiling": ceiling})


class BulkList(APIView):
    """Start a bulk decision: on a selection, or on all that match minus some. `expected` is the count the
    preview confirmed (409 when the queue moved since). Runs as a job; poll it, undo it as a whole."""

    permission_classes = [ReviewerWrites]

    @extend_schema(request=s.BulkSerializer, responses={202: s.BulkJobSerializer, 400: ERROR, 409: ERROR})
    def post(self, request: Request) -> Response:
        data = _valid(s.BulkSerializer, request.data)
        if data.get("expected") is None:
            raise LabError("Say how many samples you confirmed (expected): ask bulk/preview/ first.", field="expected")
        job = bulk_services.bulk_create(
            reviewer=request.user,
            action=data["action"],
            queue=_queue(data["filters"]),
            selected=data["selected"],
            excluded=data["excluded"],
            expected=data["expected"],
            ceiling=data.get("ceiling"),
            reason=data["reason"],
            note=data["note"],
        )
        job.refresh_from_db()
        return Response(s.BulkJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class BulkDetail(APIView):
    permission_classes = [ReviewerWrites]

    @extend_schema(responses=s.BulkJobSerializer)
    def get(self, request: Request, pk: int) -> Response:
        job = BulkJob.objects.select_related("reviewer").filter(pk=pk).first()
        if job is None:
            raise NotFound(f"No bulk job {pk}.")
        return Response(s.BulkJobSerializer(job).data)


def _bulk_act(pk: int, act, *, answer: int = status.HTTP_202_ACCEPTED) -> Response:
    """Run `act(job)` (a service that queues the job's work, or stops it) on bulk job `pk`: the job as it now is."""
    job = BulkJob.objects.filter(pk=pk).first()
    if job is None:
        raise NotFound(f"No bulk job {pk}.")
    job = act(job)
    job.refresh_from_db()
    return Response(s.BulkJobSerializer(job).data, status=answer)


class BulkUndo(APIView):
    """Take a whole bulk job back (its decisions still in force), as a job of its own."""

    permission_classes = [ReviewerWrites]

    @extend_schema(request=None, responses={202: s.BulkJobSerializer, 409: ERROR})
    def post(self, request: Request, pk: int) -> Response:
        return _bulk_act(pk, lambda job: bulk_services.bulk_undo(job=job, reviewer=request.user))


class BulkResume(APIView):
    """Go on with a failed bulk job (or its failed undo) from where it stopped: what it decided is kept and no
    sample is decided twice. Its reviewer may (operators too); 409 for a job that has not failed."""

    permission_classes = [ReviewerWrites]

    @extend_schema(request=None, responses={202: s.BulkJobSerializer, 409: ERROR})
    def post(self, request: Request, pk: int) -> Response:
        return _bulk_act(pk, lambda job: bulk_services.bulk_resume(job=job, user=request.user))


class BulkCancel(APIView):
    """Stop a queued or running bulk job: what it decided stays decided (undo the job to take it back), the rest
    stays pending. Its reviewer may (operators too); 409 for a job that is not queued or running."""

    permission_classes = [ReviewerWrites]

    @extend_schema(request=None, responses={200: s.BulkJobSerializer, 409: ERROR})
    def post(self, request: Request, pk: int) -> Response:
        return _bulk_act(
            pk, lambda job: bulk_services.bulk_cancel(job=job, user=request.user), answer=status.HTTP_200_OK
        )


class Stats(APIView):
    """Progress from the counters: pending, approved, rejected, edited and acceptance rate, per leaf and branch."""

    permission_classes = [ReviewerWrites]

    @extend_schema(
        parameters=[OpenApiParameter("run", int), OpenApiParameter("path", str, description="A leaf or branch")],
        responses=s.StatsSerializer,
    )
    def get(self, request: Request) -> Response:
        queue = Queue.parse(request.query_params)
        result = selectors.progress(run=queue.run, path=queue.path)
        return Response(
            {
                "total": result["total"].as_dict(),
                "branches": [row.as_dict() for row in result["branches"]],
                "leaves": [row.as_dict() for row in result["leaves"]],
            }
        )


class Agreement(APIView):
    """Agreement per leaf (Cohen's kappa for two reviewers, Krippendorff's alpha for more) and per pair."""

    permission_classes = [ReviewerWrites]

    @extend_schema(
        parameters=[OpenApiParameter("run", int), OpenApiParameter("path", str, description="A leaf or branch")],
        responses=s.AgreementSerializer,
    )
    def get(self, request: Request) -> Response:
        queue = Queue.parse(request.query_params)
        result = selectors.agreement(run=queue.run, path=queue.path)
        return Response(
            {"overall": result.overall, "items": result.items, "leaves": result.leaves, "pairs": result.pairs}
        )
