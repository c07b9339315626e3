import django_filters

from curation.models import Document, Leaf, SeedExample


class StrictBooleanFilter(django_filters.TypedChoiceFilter):
    """true/false (or 1/0); anything else is a 400 naming the field, never silently ignored."""

    def __init__(self, *args, **kwargs):
        choices = [("true", "true"), ("false", "false"), ("1", "1"), ("0", "0")]
        super().__init__(*args, choices=choices, coerce=lambda value: value in ("true", "1"), **kwargs)


class TextInFilter(django_filters.BaseInFilter, django_filters.CharFilter):
    """Comma-separated text values, each checked as a CharField checks one (no NUL characters)."""


class LeafFilter(django_filters.FilterSet):
    is_valid = StrictBooleanFilter()
    q = django_filters.CharFilter(field_name="path", lookup_expr="icontains", label="Path contains")
    under = django_filters.CharFilter(method="filter_under", label="Folder path prefix")
    paths = TextInFilter(field_name="path", label="Exact paths, comma separated")

    class Meta:
        model = Leaf
        fields = ["kind", "is_valid", "version"]

    def filter_under(self, queryset, name, value):
        return queryset.filter(path__startswith=value.rstrip("/") + "/") | queryset.filter(path=value.rstrip("/"))


class SeedFilter(django_filters.FilterSet):
    class Meta:
        model = SeedExample
        fields = ["leaf"]


class DocumentFilter(django_filters.FilterSet):
    class Meta:
        model = Document
        fields = ["leaf"]
