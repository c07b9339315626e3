"""The taxonomy REST API: thin viewsets over the curation services and selectors."""

from django.db.models import Count
from django.http import Http404, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action, api_view, permission_classes
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response

from curation import selectors, services
from curation.api import serializers as s
from curation.api.filters import DocumentFilter, LeafFilter, SeedFilter
from curation.models import Document, ImportJob, Leaf, SeedExample, TaxonomyImport, TaxonomySnapshot
from curation.services import ImportSource
from curation.services.documents import MAX_DOCUMENT_BYTES
from curation.services.imports.jobs import ImportRefused, import_job_cancel, import_job_create
from curation.taxonomy import dump_qna
from curation.tree import Folder, taxonomy_tree
from curation.views.exports import export_response
from labweb.api import ErrorSerializer, call_with_precondition, expected_revision
from labweb.errors import LabError
from labweb.roles import CURATOR, role_permission

CuratorWrites = role_permission(write=CURATOR)


class PathCursor(CursorPagination):
    ordering = "path"


class LeafGone(LabError):
    """The leaf was deleted; only its history remains."""

    status = 410


def leaf_response(leaf: Leaf, *, code: int = status.HTTP_200_OK) -> Response:
    leaf = Leaf.objects.annotate(seed_count=Count("seeds")).prefetch_related("seeds", "documents").get(pk=leaf.pk)
    response = Response(s.LeafDetailSerializer(leaf).data, status=code)
    response["ETag"] = f'"{leaf.revision}"'
    return response


class LeafViewSet(viewsets.ModelViewSet):
    """Taxonomy leaves. Writes need the curator role and take the leaf's ETag in If-Match (or `revision`)."""

    permission_classes = [CuratorWrites]
    filterset_class = LeafFilter
    pagination_class = PathCursor
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        leaves = Leaf.objects.annotate(seed_count=Count("seeds"))
        if self.action == "retrieve":
            leaves = leaves.prefetch_related("seeds", "documents")
        return leaves

    def get_serializer_class(self):
        return {
            "retrieve": s.LeafDetailSerializer,
            "create": s.LeafCreateSerializer,
            "partial_update": s.LeafWriteSerializer,
            "move": s.MoveLeafSerializer,
        }.get(self.action, s.LeafSerializer)

    def retrieve(self, request, *args, **kwargs):
        return leaf_response(self.get_object())

    @extend_schema(request=s.LeafCreateSerializer, responses={201: s.LeafDetailSerializer})
    def create(self, request, *args, **kwargs):
        data = self._valid(s.LeafCreateSerializer, request.data)
        data.pop("revision", None)
        leaf = services.leaf_create(user=request.user, **data)
        return leaf_response(leaf, code=status.HTTP_201_CREATED)

    @extend_schema(request=s.LeafWriteSerializer, responses=s.LeafDetailSerializer)
    def partial_update(self, request, *args, **kwargs):
        leaf = self.get_object()
        data = self._valid(s.LeafWriteSerializer, request.data)
        revision = expected_revision(request, data)
        data.pop("revision", None)
        leaf = call_with_precondition(
            request, services.leaf_update, leaf=leaf, user=request.user, expected_revision=revision, **data
        )
        return leaf_response(leaf)

    def destroy(self, request, *args, **kwargs):
        leaf = self.get_object()
        call_with_precondition(
            request,
            services.leaf_delete,
            leaf=leaf,
            user=request.user,
            expected_revision=expected_revision(request, request.data),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=s.MoveLeafSerializer, responses=s.LeafDetailSerializer)
    @action(detail=True, methods=["post"])
    def move(self, request, pk=None):
        leaf = self.get_object()
        data = self._valid(s.MoveLeafSerializer, request.data)
        leaf = call_with_precondition(
            request,
            services.leaf_move,
            leaf=leaf,
            new_path=data["path"],
            user=request.user,
            expected_revision=expected_revision(request, data),
        )
        return leaf_response(leaf)

    @extend_schema(
        responses={(200, "application/yaml"): OpenApiResponse(OpenApiTypes.ANY, description="The qna.yaml file")}
    )
    @action(detail=True, methods=["get"])
    def qna(self, request, pk=None):
        """The leaf's qna.yaml as InstructLab reads it."""
        leaf = self.get_object()
        return HttpResponse(dump_qna(selectors.leaf_qna(leaf)), content_type="application/yaml; charset=utf-8")

    def get_object(self):
        try:
            return super().get_object()
        except Http404:
            gone = selectors.deleted_leaf(int(self.kwargs["pk"])) if str(self.kwargs["pk"]).isdigit() else None
            if gone is None:
                raise
            raise LeafGone(
                f"Leaf {gone.pk} ({gone.path}) was deleted on {gone.deleted_at:%Y-%m-%d %H:%M} UTC; its history is "
                f"kept at /api/leaves/{gone.pk}/history/.",
                path=gone.path,
            ) from None

    def _history_of(self):
        """The leaf, or the deleted leaf whose history this is: history outlives the leaf."""
        try:
            return self.get_object()
        except LeafGone:
            return selectors.deleted_leaf(int(self.kwargs["pk"]))

    @extend_schema(responses=s.RevisionSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None)
    def history(self, request, pk=None):
        """Every revision, newest first; a deleted leaf's too (its newest has the action `delete`)."""
        revisions = selectors.leaf_history(self._history_of())
        return Response(s.RevisionSerializer(revisions, many=True).data)

    @extend_schema(responses=s.RevisionDetailSerializer)
    @action(detail=True, methods=["get"], url_path=r"history/(?P<number>\d+)")
    def revision(self, request, pk=None, number=None):
        found = selectors.leaf_history(self._history_of()).filter(number=number).first()
        if found is None:
            raise NotFound(f"The leaf has no revision {number}.")
        return Response(s.RevisionDetailSerializer(found).data)

    @staticmethod
    def _valid(serializer_class, data) -> dict:
        serializer = serializer_class(data=data)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)


class SeedViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Seed examples of a leaf; every change is a change of its leaf (revision, history, validation)."""

    queryset = SeedExample.objects.select_related("leaf")
    serializer_class = s.SeedExampleSerializer
    permission_classes = [CuratorWrites]
    filterset_class = SeedFilter
    pagination_class = None

    @extend_schema(request=s.SeedCreateSerializer, responses={201: s.SeedExampleSerializer})
    def create(self, request):
        data = LeafViewSet._valid(s.SeedCreateSerializer, request.data)
        leaf = data.pop("leaf")
        revision = expected_revision(request, data)
        data.pop("revision", None)
        seed = call_with_precondition(
            request, services.seed_add, leaf=leaf, user=request.user, expected_revision=revision, **data
        )
        return Response(s.SeedExampleSerializer(seed).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.SeedWriteSerializer, responses=s.SeedExampleSerializer)
    def partial_update(self, request, pk=None):
        seed = self.get_object()
        data = LeafViewSet._valid(s.SeedWriteSerializer, request.data)
        revision = expected_revision(request, data)
        data.pop("revision", None)
        seed = call_with_precondition(
            request, services.seed_update, seed=seed, user=request.user, expected_revision=revision, **data
        )
        return Response(s.SeedExampleSerializer(seed).data)

    def destroy(self, request, pk=None):
        seed = self.get_object()
        call_with_precondition(
            request,
            services.seed_delete,
            seed=seed,
            user=request.user,
            expected_revision=expected_revision(request, request.data),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=s.MoveSeedSerializer, responses=s.SeedExampleSerializer(many=True))
    @action(detail=True, methods=["post"])
    def move(self, request, pk=None):
        seed = self.get_object()
        data = LeafViewSet._valid(s.MoveSeedSerializer, request.data)
        leaf = call_with_precondition(
            request,
            services.seed_move,
            seed=seed,
            user=request.user,
            position=data["position"],
            expected_revision=expected_revision(request, data),
        )
        return Response(s.SeedExampleSerializer(leaf.seeds.order_by("position"), many=True).data)


class DocumentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Knowledge source documents (Markdown) attached to leaves."""

    queryset = Document.objects.defer("content")
    permission_classes = [CuratorWrites]
    filterset_class = DocumentFilter
    pagination_class = None
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    def get_queryset(self):
        return Document.objects.all() if self.action == "retrieve" else Document.objects.defer("content")

    def get_serializer_class(self):
        return s.DocumentDetailSerializer if self.action == "retrieve" else s.DocumentSerializer

    @extend_schema(
        request={"multipart/form-data": s.DocumentCreateSerializer, "application/json": s.DocumentCreateSerializer},
        responses={201: s.DocumentSerializer},
    )
    def create(self, request):
        data = LeafViewSet._valid(s.DocumentCreateSerializer, request.data)
        upload = data.get("file")
        name = data.get("name") or upload.name
        # Read one byte past the limit, not the whole upload: the service refuses what is too large.
        content = upload.read(MAX_DOCUMENT_BYTES + 1) if upload else data["content"]
        document = call_with_precondition(
            request,
            services.document_add,
            leaf=data["leaf"],
            user=request.user,
            name=name,
            content=content,
            expected_revision=expected_revision(request, data),
        )
        return Response(s.DocumentSerializer(document).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, pk=None):
        call_with_precondition(
            request,
            services.document_delete,
            document=self.get_object(),
            user=request.user,
            expected_revision=expected_revision(request, request.data),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class ImportViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Imports of InstructLab taxonomies, with every rejected file and why."""

    queryset = TaxonomyImport.objects.select_related("created_by")
    serializer_class = s.ImportSerializer
    permission_classes = [CuratorWrites]
    parser_classes = [MultiPartParser, FormParser, JSONParser]
    pagination_class = None

    @extend_schema(
        request={"multipart/form-data": s.ImportCreateSerializer, "application/json": s.ImportCreateSerializer},
        responses={
            202: s.ImportJobSerializer,
            400: s.ImportRefusedSerializer,
            403: ErrorSerializer,
            409: ErrorSerializer,
        },
    )
    def create(self, request):
        """Queue an import (or its dry run): 202 with the job, whose URL (also in Location) tells its progress and
        then its result. A source refused at once (not an archive, too big, no such folder) is 400, recorded as a
        refused import; while another import that writes is queued or running, 409."""
        data = LeafViewSet._valid(s.ImportCreateSerializer, request.data)
        if data.get("archive"):
            source = ImportSource.upload(data["archive"], data["archive"].name)
        elif data.get("git"):
            source = ImportSource.git(data["git"], data["ref"])
        else:
            source = ImportSource.directory(data["directory"])
        try:
            job = import_job_create(
                source=source,
                user=request.user,
                prune=data["prune"],
                allow_remove_all=data["allow_remove_all"],
                dry_run=data["dry_run"],
            )
        except ImportRefused as refused:
            body = {"error": refused.record.problems[0], "errors": refused.record.problems}
            body["import"] = s.ImportSerializer(refused.record).data
            return Response(body, status=status.HTTP_400_BAD_REQUEST)
        body = s.ImportJobSerializer(job, context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


class ImportJobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Import jobs, newest first: progress while they run (files read, leaves validated, leaves written), then
    the import's record, the dry run's plan, or the error. Curators cancel one that is queued or running."""

    queryset = ImportJob.objects.select_related("created_by", "record__created_by")
    serializer_class = s.ImportJobSerializer
    permission_classes = [CuratorWrites]
    pagination_class = None

    def get_queryset(self):
        if self.action == "list":
            return super().get_queryset()[:100]
        return super().get_queryset()

    @extend_schema(request=None, responses={200: s.ImportJobSerializer, 409: ErrorSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        job = import_job_cancel(job=self.get_object(), user=request.user)
        return Response(s.ImportJobSerializer(job, context={"request": request}).data)


class SnapshotViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Named baselines of the whole taxonomy, for diff."""

    queryset = TaxonomySnapshot.objects.select_related("created_by")
    serializer_class = s.SnapshotSerializer
    permission_classes = [CuratorWrites]
    pagination_class = None

    def perform_create(self, serializer):
        serializer.instance = services.snapshot_create(name=serializer.validated_data["name"], user=self.request.user)


AnyRole = role_permission(write=None)


@extend_schema(
    parameters=[OpenApiParameter("baseline", int, description="Snapshot id; default: the last import")],
    responses=s.DiffSerializer,
)
@api_view(["GET"])
@permission_classes([AnyRole])
def diff(request):
    """Leaves added, modified or removed since a baseline, like `ilab taxonomy diff`."""
    baseline = selectors.snapshot_by_id(request.query_params.get("baseline", ""))
    return Response(selectors.taxonomy_diff(baseline=baseline).as_dict())


@extend_schema(responses={(200, "application/gzip"): bytes})
@api_view(["GET"])
@permission_classes([AnyRole])
def export(request):
    """Every valid leaf as an InstructLab taxonomy (.tar.gz); invalid leaves are counted in a header."""
    return export_response(selectors.taxonomy_export())


def _tree_json(folder: Folder) -> dict:
    return {
        "name": folder.name,
        "path": folder.path,
        "leaves": folder.leaves,
        "invalid": folder.invalid,
        "leaf": folder.leaf,
        "counters": folder.counts,
        "children": [_tree_json(child) for child in folder.children or ()],
    }


@extend_schema(responses=dict)
@api_view(["GET"])
@permission_classes([AnyRole])
def tree(request):
    """The whole taxonomy tree with leaf and invalid-leaf counts per folder, and every registered per-leaf
    counter (`curation.tree_counters`) summed over each folder's subtree."""
    return Response(_tree_json(taxonomy_tree()))
