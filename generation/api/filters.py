import django_filters

from generation.models import GenerationRun, RunEvent, Sample, WorkItem
from generation.selectors import under_path


class LeafPathFilter(django_filters.FilterSet):
    leaf_path = django_filters.CharFilter(
        method="filter_leaf_path", label="A leaf path, or a folder: every leaf under it"
    )

    def filter_leaf_path(self, queryset, name, value):
        return under_path(queryset, value)


class RunFilter(django_filters.FilterSet):
    class Meta:
        model = GenerationRun
        fields = ["status", "teacher", "scope"]


class WorkItemFilter(LeafPathFilter):
    class Meta:
        model = WorkItem
        fields = ["run", "state", "kind"]


class SampleFilter(LeafPathFilter):
    verdict_steered = django_filters.BooleanFilter(
        method="filter_verdict_steered", label="Only samples with (true) or without (false) a verdict LabWeb chose"
    )

    def filter_verdict_steered(self, queryset, name, value):
        return queryset.exclude(steered_verdicts=[]) if value else queryset.filter(steered_verdicts=[])

    class Meta:
        model = Sample
        fields = ["run", "kind"]


class RunEventFilter(django_filters.FilterSet):
    class Meta:
        model = RunEvent
        fields = ["level"]
